"""Evaluate and predict from a checkpoint: the numbers, the files, and every user error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskdepth.checkpoint import save_checkpoint
from maskdepth.cli import main
from maskdepth.config import config_to_dict, load_config
from maskdepth.data import open_dataset
from maskdepth.errors import CheckpointError, ConfigError, DataError
from maskdepth.inference import evaluate_checkpoint, format_metrics, load_model, predict_pairs
from maskdepth.metrics import DEPTH_KEYS, MASK_KEYS, depth_metrics, mask_metrics
from maskdepth.model import build_model

from conftest import QUICK

SIZE = 32


def _write_checkpoint(path: Path, data: Path, *, weights_channels: int = 8, config_channels: int = 8,
                      splits: dict | None = None, model: torch.nn.Module | None = None) -> Path:
    """A checkpoint of `model` (default: a seeded untrained MaskDepthNet) trained at SIZE px."""
    cfg = load_config(QUICK, [f"data.path={data}", f"data.size={SIZE}", f"model.base_channels={config_channels}",
                              "train.batch_size=8", "device=cpu"])
    torch.manual_seed(0)
    model = model or build_model("maskdepth", base_channels=weights_channels)
    state = {"version": "test", "config": config_to_dict(cfg), "model": model.state_dict(),
             "epoch": 3, "step": 21, "batch_in_epoch": 0}
    if splits is not None:
        state["splits"] = splits
    return save_checkpoint(path, state)


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    splits = open_dataset(tiny_data, SIZE, "train").splits
    return _write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", tiny_data, splits=splits)


def _png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# load_model


def test_load_model_rebuilds_the_architecture_in_eval_mode(checkpoint: Path) -> None:
    model, cfg = load_model(checkpoint)
    assert not model.training
    assert cfg.model.name == "maskdepth" and cfg.model.base_channels == 8 and cfg.data.size == SIZE
    torch.manual_seed(0)
    reference = build_model("maskdepth", base_channels=8).state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[key], msg=key)


def test_load_model_errors(tmp_path: Path, tiny_data: Path) -> None:
    with pytest.raises(CheckpointError, match="missing.pt.*not found"):
        load_model(tmp_path / "missing.pt")
    wrong = _write_checkpoint(tmp_path / "wrong.pt", tiny_data, weights_channels=8, config_channels=16)
    with pytest.raises(CheckpointError, match="wrong.pt.*do not fit.*base_channels.*of another shape"):
        load_model(wrong)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")


# ---------------------------------------------------------------------------------------------
# evaluate_checkpoint


def test_evaluate_matches_metrics_computed_by_hand(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "test.json"
    results = evaluate_checkpoint(checkpoint, out=out, batch_size=3)

    test_set = open_dataset(tiny_data, SIZE, "test")
    model, _ = load_model(checkpoint)
    items = [test_set[i] for i in range(len(test_set))]
    bg = torch.stack([it["bg"] for it in items])
    fg_bg = torch.stack([it["fg_bg"] for it in items])
    true_mask = torch.stack([it["mask"] for it in items])
    true_depth = torch.stack([it["depth"] for it in items])
    with torch.no_grad():
        pred_logits, pred_depth = model(bg, fg_bg)
    expected = {**mask_metrics(torch.sigmoid(pred_logits), true_mask), **depth_metrics(pred_depth, true_depth)}
    inside = depth_metrics(pred_depth, true_depth, region=true_mask >= 0.5)

    assert results["count"] == len(test_set) > 0
    assert results["split"] == "test" and results["epoch"] == 3 and results["size"] == SIZE
    assert results["split_matches_training"] is True
    assert set(results["metrics"]) == set(MASK_KEYS + DEPTH_KEYS)
    for key, value in expected.items():
        assert results["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    for key, value in inside.items():
        assert results["inside"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert set(results["outside"]) == set(DEPTH_KEYS)
    assert json.loads(out.read_text()) == results
    assert [p.name for p in out.parent.iterdir()] == ["test.json"]


def test_evaluate_splits_and_overrides(checkpoint: Path, tiny_data: Path) -> None:
    total = sum(len(open_dataset(tiny_data, SIZE, s)) for s in ("train", "val", "test"))
    assert evaluate_checkpoint(checkpoint, split="all")["count"] == total
    smaller = evaluate_checkpoint(checkpoint, split="val", overrides=["data.size=16"])
    assert smaller["size"] == 16 and smaller["count"] == len(open_dataset(tiny_data, 16, "val"))
    with pytest.raises(ConfigError, match="data.sise"):
        evaluate_checkpoint(checkpoint, overrides=["data.sise=16"])
    with pytest.raises(DataError, match="elsewhere.zip.*not found"):
        evaluate_checkpoint(checkpoint, data="elsewhere.zip")


def test_evaluate_flags_a_dataset_whose_split_differs_from_training(checkpoint: Path, tiny_data: Path) -> None:
    results = evaluate_checkpoint(checkpoint, split="val", overrides=["data.split_seed=5"])
    assert results["split_matches_training"] is False
    assert "may not be held out" in format_metrics(results)


def test_format_metrics_is_a_table_of_every_metric() -> None:
    results = {"checkpoint": "ck.pt", "epoch": 2, "model": "maskdepth", "split": "test", "data": "d.zip",
               "count": 7, "size": 32, "split_matches_training": True,
               "metrics": {k: 0.5 for k in MASK_KEYS + DEPTH_KEYS},
               "inside": {k: None for k in DEPTH_KEYS}, "outside": {k: 0.25 for k in DEPTH_KEYS}}
    text = format_metrics(results)
    lines = text.splitlines()
    assert "7 images" in lines[0] and "epoch 2" in lines[0]
    assert "inside mask" in lines[1] and "outside mask" in lines[1]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == set(MASK_KEYS + DEPTH_KEYS)
    assert rows["iou"] == ["0.5000"]
    assert rows["rmse"] == ["0.5000", "n/a", "0.2500"]


# ---------------------------------------------------------------------------------------------
# predict_pairs


def test_predict_writes_the_four_files_at_the_input_size(checkpoint: Path, tmp_path: Path) -> None:
    bg = _png(tmp_path / "bg.png", 40, 56, seed=1)
    fg_bg = _png(tmp_path / "scene.jpg", 40, 56, seed=2)
    written = predict_pairs(checkpoint, bg=bg, fg_bg=fg_bg, out=tmp_path / "out", device="cpu")

    assert [p.name for p in written] == ["scene_mask.png", "scene_depth.png", "scene_depth_color.png",
                                         "scene_overlay.png"]
    mask, depth, color, overlay = (Image.open(p) for p in written)
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert depth.mode in ("I;16", "I") and np.asarray(depth).max() > 255  # really 16-bit values
    assert color.mode == "RGB" and overlay.mode == "RGB"
    assert {im.size for im in (mask, depth, color, overlay)} == {(56, 40)}


def test_predict_at_training_size_is_the_model_output(checkpoint: Path, tmp_path: Path) -> None:
    bg = _png(tmp_path / "bg.png", SIZE, SIZE, seed=3)
    fg_bg = _png(tmp_path / "x.png", SIZE, SIZE, seed=4)
    written = predict_pairs(checkpoint, bg=bg, fg_bg=fg_bg, out=tmp_path / "out", device="cpu")

    model, _ = load_model(checkpoint)
    to_tensor = lambda p: torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        pred_logits, pred_depth = model(to_tensor(bg), to_tensor(fg_bg))
    expected_mask = (torch.sigmoid(pred_logits)[0, 0] >= 0.5).numpy() * 255
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])), expected_mask)
    depth16 = np.asarray(Image.open(written[1])).astype(np.float64) / 65535
    np.testing.assert_allclose(depth16, pred_depth[0, 0].numpy(), atol=1e-4)


def test_predict_errors_name_the_files(checkpoint: Path, tmp_path: Path) -> None:
    bg = _png(tmp_path / "bg.png", 32, 32)
    small = _png(tmp_path / "small.png", 24, 32)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"bg.png is 32x32 but .*small.png is 32x24"):
        predict_pairs(checkpoint, bg=bg, fg_bg=small, out=out, device="cpu")
    with pytest.raises(DataError, match="broken.png"):
        predict_pairs(checkpoint, bg=bg, fg_bg=broken, out=out, device="cpu")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_evaluate_and_predict(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "val.json"
    assert main(["evaluate", str(checkpoint), "device=cpu", "--split", "val", "--out", str(out),
                 "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "rmse" in printed and "inside mask" in printed and f"wrote {out}" in printed
    assert json.loads(out.read_text())["split"] == "val"

    bg = _png(tmp_path / "bg.png", 32, 32)
    fg_bg = _png(tmp_path / "p.png", 32, 32)
    assert main(["predict", str(checkpoint), "--bg", str(bg), "--fg-bg", str(fg_bg),
                 "--out", str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "p_depth.png", "p_depth_color.png", "p_mask.png", "p_overlay.png"]
    assert str(tmp_path / "pred" / "p_mask.png") in capsys.readouterr().out

    assert main(["predict", str(checkpoint), "--bg", str(tmp_path / "gone.png"), "--fg-bg", str(fg_bg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskdepth: error: --bg") and "gone.png: no such file" in err
