"""benchmarks/scale_cues.py: each image's depth-scale error related to the scene facts of scenes.csv."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from benchmarks import scale_cues
from maskdepth.checkpoint import TrainState, make_state, save_checkpoint
from maskdepth.config import load_config
from maskdepth.model import build_model
from maskdepth.runtime import grad_scaler
from maskdepth.synth import make_dataset


@pytest.mark.slow
def test_scale_cues_relates_the_scale_error_to_the_scene(tmp_path: Path) -> None:
    archive = tmp_path / "unseen.zip"
    make_dataset(archive, size=32, num_bg=4, num_fg=3, per_pair=1, seed=1, workers=1, progress=False)
    cfg = load_config(None, ["data.size=32", "model.base_channels=8", "model.num_stages=2"])
    model = build_model(cfg.model.name, **cfg.model.options())
    state = make_state(TrainState(), config=dataclasses.asdict(cfg), model=model,
                       optimizer=torch.optim.AdamW(model.parameters()), scaler=grad_scaler(False))
    checkpoint = save_checkpoint(tmp_path / "last.pt", state)
    out = tmp_path / "results" / "cues"
    summary = scale_cues.main([str(checkpoint), str(archive), "--out", str(out)])
    assert summary["images"] == 24 and 0 < summary["median_scale_ratio"]
    for cue in scale_cues.NUMERIC_CUES:
        assert -1 <= summary["cues"][cue]["spearman_log_ratio"] <= 1, cue
    assert set(summary["cues"]["scene_kind"]) <= {"room", "hall", "street", "yard"}
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {"camera_height_m", "scale_ratio", "delta1_ms"} <= set(rows[0])
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
