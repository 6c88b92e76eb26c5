"""Datasets: zip archives read from RAM, manifests that pair their entries, tensors and splits.

    from maskdepth.data import open_dataset, collate
    train = open_dataset("data.zip", size=64, split="train")

Storage and the Dataset only: nothing here knows of training or of the generator
(`maskdepth.synth`). Modules: `archive` (zip index and entry bytes), `manifest` (pairing,
`build_manifest` for the original layout, `read_scene_table`), `images` (decoding), `splits`,
`dataset` (`open_dataset`, `collate`), `augment` (the batch augmentation training applies on its
device), `check` (`check_data`), `localcopy` (`prepare_dataset`: a dataset on Drive copied and
indexed on local disk once). Names are imported on first use: `maskdepth.data.images` (what
make-data needs) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # public name -> the module that holds it
    "open_dataset": "maskdepth.data.dataset", "collate": "maskdepth.data.dataset",
    "to_float": "maskdepth.data.dataset", "MaskDepthDataset": "maskdepth.data.dataset",
    "split_backgrounds": "maskdepth.data.splits", "read_image_file": "maskdepth.data.images",
    "check_data": "maskdepth.data.check", "CheckReport": "maskdepth.data.check",
    "build_manifest": "maskdepth.data.manifest", "IndexReport": "maskdepth.data.manifest",
    "load_manifest": "maskdepth.data.manifest", "read_scene_table": "maskdepth.data.manifest",
    "ZipArchive": "maskdepth.data.archive", "prepare_dataset": "maskdepth.data.localcopy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maskdepth.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
