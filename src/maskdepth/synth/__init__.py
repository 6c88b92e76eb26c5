"""The procedural dataset generator behind `maskdepth make-data`: training data without downloads.

    from maskdepth.synth import make_dataset
    make_dataset("data/tiny.zip", size=64, num_bg=4, num_fg=4, per_pair=2)

It exists so that the whole pipeline (training, evaluation, the notebook, the tests) runs on data
with exact depth made on any machine. Modules: `scene` (3D rooms, halls, streets and yards, ray
cast with exact depth), `objects` (textured silhouettes with soft alpha), `make` (placing objects
in scenes, writing the archive that `maskdepth.data` reads). The archive is an ordinary dataset:
nothing in `maskdepth.data` knows that it was generated.
"""

from __future__ import annotations

from maskdepth.synth.make import (
    GENERATOR_VERSION,
    MANIFEST_COLUMNS,
    SCENE_COLUMNS,
    ArchiveWriter,
    MakeDataSummary,
    background_scene,
    make_dataset,
    render_background,
    scene_objects,
)

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_COLUMNS",
    "SCENE_COLUMNS",
    "ArchiveWriter",
    "MakeDataSummary",
    "background_scene",
    "make_dataset",
    "render_background",
    "scene_objects",
]
