"""The failure report and the per-epoch worst grid: figures against metrics computed directly,
and the worst-K grids against a brute-force ranking of every image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from maskdepth import report, viz
from maskdepth.cli import main
from maskdepth.config import load_config
from maskdepth.data import collate, open_dataset, read_scene_table
from maskdepth.evaluate import evaluate
from maskdepth.inference import load_model
from maskdepth.metrics import depth_metrics, mask_metrics
from maskdepth.report import COVERAGE_BANDS, DEPTH_BANDS, FailureReport, WorstK, bands, entry_stem, worst_key
from maskdepth.train import fit

from conftest import QUICK

K = 3


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch tiny run whose last epoch drew samples/worst_001.png (K rows)."""
    run = tmp_path_factory.mktemp("report") / "run"
    fit(load_config(QUICK, [f"data.path={tiny_data}", f"run_dir={run}", "data.size=32", "data.num_workers=0",
                            "train.epochs=1", "train.batch_size=8", "train.num_samples=2", "train.checkpoint_minutes=0",
                            "model.base_channels=8", "device=cpu", f"train.worst_samples={K}"]))
    return run


def _brute_force(model: torch.nn.Module, dataset) -> dict[str, np.ndarray]:
    """Every image of `dataset` through `model` in one batch: its per-image metrics, and the tensors."""
    batch = collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits, pred_depth = model(batch["bg"], batch["fg_bg"])
    prob, true_mask, true_depth = torch.sigmoid(logits), batch["mask"], batch["depth"]
    out = {k: v.numpy() for k, v in mask_metrics(prob, true_mask, reduction="none").items()}
    out.update({k: v.numpy() for k, v in depth_metrics(pred_depth, true_depth, reduction="none").items()})
    out.update(names=np.array(batch["name"]), pred_depth=pred_depth, true_depth=true_depth,
               coverage=(true_mask >= 0.5).flatten(1).double().mean(1).numpy())
    return out


def _ranking(scores: np.ndarray, higher_is_worse: bool, k: int) -> list[int]:
    keep = [i for i in range(len(scores)) if not math.isnan(scores[i])]
    return sorted(keep, key=lambda i: (-scores[i] if higher_is_worse else scores[i], i))[:k]


@pytest.mark.parametrize("key", ["iou", "rmse"])
def test_worst_k_streamed_equals_a_full_sort(key: str) -> None:
    rng = np.random.default_rng(0)
    scores = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, math.nan], size=103)  # many ties, some NaN
    worst = WorstK(5, key)
    for start in range(0, len(scores), 7):
        idx = list(range(start, min(start + 7, len(scores))))
        worst.update(idx, [f"s{i}" for i in idx], {key: torch.tensor(scores[idx])})
    expected = _ranking(scores, key == "rmse", 5)
    assert [row["index"] for row in worst.result()] == expected
    assert [row["name"] for row in worst.result()] == [f"s{i}" for i in expected]


def test_worst_key_follows_best_metric() -> None:
    assert worst_key("val_iou") == "iou" and worst_key("val_rmse") == "rmse" and worst_key("val_loss") == "iou"
    assert WorstK(1, "rmse").higher_is_worse and not WorstK(1, "delta1").higher_is_worse


def test_training_worst_grid_holds_the_k_worst_val_samples(trained: Path, tiny_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert (trained / "samples" / "worst_001.png").is_file() and (trained / "samples" / "epoch_001.png").is_file()
    model, cfg = load_model(trained / "checkpoints" / "last.pt")
    val = open_dataset(tiny_data, 32, "val", **cfg.data.dataset_options())
    truth = _brute_force(model, val)
    expected = [str(truth["names"][i]) for i in _ranking(truth["iou"], False, K)]
    drawn: list = []
    monkeypatch.setattr(report.viz, "save_sample_grid", lambda path, *a, **kw: drawn.append((a, kw)))
    grids = report.EpochGrids(trained, model, None, torch.device("cpu"), val_set=val, worst=K, metric="val_iou")
    loader = torch.utils.data.DataLoader(val, batch_size=5, collate_fn=collate)
    evaluate(model, loader, torch.device("cpu"), on_batch=grids.observe)
    grids({"epoch": 1})
    (images, kwargs), = drawn
    assert [t.split()[0] for t in kwargs["row_titles"]] == expected
    rows = [int(np.flatnonzero(truth["names"] == name)[0]) for name in expected]
    assert torch.equal(images[4], truth["true_depth"][rows])  # the true depth column holds those samples


def test_report_tables_match_metrics_computed_directly(trained: Path, tiny_data: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model, cfg = load_model(trained / "checkpoints" / "last.pt")
    ds = open_dataset(tiny_data, 32, "val", **cfg.data.dataset_options())
    truth = _brute_force(model, ds)
    found = FailureReport(K)
    evaluate(model, torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate), torch.device("cpu"),
             on_batch=found)
    tables = found.tables(read_scene_table(tiny_data))
    for row, (lo, hi) in zip(tables["depth_bands"], bands(DEPTH_BANDS), strict=True):
        t = truth["true_depth"]
        direct = depth_metrics(truth["pred_depth"], t, region=(t >= lo) & (t < hi), reduction="mean")
        for key in report.BAND_KEYS:
            assert row[key] == pytest.approx(direct[key], rel=1e-6, abs=1e-9) or (row[key] is None
                                                                                  and math.isnan(direct[key]))
    for row, (lo, hi) in zip(tables["coverage_bands"], bands(COVERAGE_BANDS), strict=True):
        pick = (truth["coverage"] >= lo) & (truth["coverage"] < hi)
        assert row["images"] == pick.sum()
        if pick.any():
            assert row["iou"] == pytest.approx(truth["iou"][pick].mean(), rel=1e-6)
    assert sum(r["images"] for r in tables["coverage_bands"]) == len(ds)
    kinds = {entry_stem(r["fg_bg"]): r["scene_kind"] for r in read_scene_table(tiny_data)}
    for row in tables["scenes"]["scene_kind"]:
        pick = np.array([kinds[n] == row["kind"] for n in truth["names"]])
        assert row["images"] == pick.sum()
        assert row["rmse"] == pytest.approx(np.nanmean(truth["rmse"][pick]), rel=1e-6)
    assert [r["name"] for r in tables["worst_iou"]] == [truth["names"][i] for i in _ranking(truth["iou"], False, K)]
    assert [r["name"] for r in tables["worst_depth"]] == [truth["names"][i] for i in _ranking(truth["rmse"], True, K)]


def test_evaluate_report_cli_end_to_end(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    assert main(["evaluate", str(trained / "checkpoints" / "last.pt"), "--split", "val", "--report", str(out),
                 "--worst", "2", "device=cpu"]) == 0
    assert "failure report" in capsys.readouterr().out
    index = (out / "index.md").read_text()
    pictures = ["worst_iou.png", "worst_depth.png", "bands.png", "histograms.png"]
    assert [index.index(f"({p})") for p in pictures] == sorted(index.index(f"({p})") for p in pictures)
    assert all((out / p).is_file() for p in pictures) and "scene_kind" in index
    saved = json.loads((out / "report.json").read_text())
    assert len(saved["worst_iou"]) == 2 and saved["results"]["count"] == len(
        (out / "per_image.csv").read_text().splitlines()) - 1


def test_save_sample_grid_row_titles_must_match_rows(tmp_path: Path) -> None:
    x, m = torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 16)
    assert viz.save_sample_grid(tmp_path / "g.png", x, x, m.round(), m, m, m, row_titles=["a", "b"]).is_file()
    with pytest.raises(ValueError, match="row titles"):
        viz.save_sample_grid(tmp_path / "h.png", x, x, m.round(), m, m, m, row_titles=["a"])
