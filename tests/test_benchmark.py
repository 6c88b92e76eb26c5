"""benchmarks/report.py, quality.py, finetune.py and long_run.py run end to end with --smoke: the data
files they write and the tables benchmarks/render.py makes of them (their classical baselines:
tests/test_baselines.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import finetune, long_run, quality, render, report

pytestmark = pytest.mark.slow


def _finite(row: dict, keys: list[str]) -> bool:
    return all(isinstance(row[k], (int, float)) and math.isfinite(row[k]) for k in keys)


def _render_all(prefix: str, data: dict, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every table of one data file, by name (the tables `skip` names are left out)."""
    names = [n for n in render.TABLES if n.startswith(prefix + ".") and not n.endswith(skip)]
    return {name: render.render_table(name, data) for name in [*names, prefix + ".meta"]}


def _meta_ok(meta: dict, benchmark: str, argv_start: str) -> None:
    assert meta["benchmark"] == benchmark
    assert meta["command"].startswith(f"python -m benchmarks.{benchmark} {argv_start}")
    assert meta["torch"] == torch.__version__ and meta["date"] and meta["machine"]["cpus"]


def test_plan_steps_spends_the_budget():
    # 10 s at 16 img/s with batch 8 = 20 steps; 100 train samples = 12 full steps per epoch
    assert report.plan_steps(10, 16, 8, 100, epochs=4) == (4, 5, 20)
    # more steps than epochs x full epochs: whole epochs, as many as needed
    assert report.plan_steps(100, 16, 8, 100, epochs=4) == (17, 0, 17 * 12)
    assert report.plan_steps(0.1, 1, 8, 100, epochs=4) == (1, 1, 1)


def test_smoke_report_writes_every_section_with_finite_numbers(tmp_path):
    out, pictures = tmp_path / "report.json", tmp_path / "pictures"
    report.main(["--smoke", "--out", str(out), "--pictures", str(pictures), "--work", str(tmp_path)])
    data = json.loads(out.read_text())
    assert "errors" not in data, data.get("errors")
    _meta_ok(data["meta"], "report", "--smoke")
    methods = {m["model"]: m for m in data["quality"]["32"]["methods"]}
    assert set(methods) == {"maskdepth", "seed", "bgsub", "mean_depth"}
    for name in ("maskdepth", "seed"):
        assert _finite(methods[name], ["iou", "dice", "rmse", "abs_rel", "delta1", "training_s", "params"]), name
    assert _finite(methods["bgsub"], ["iou", "dice"]) and _finite(methods["mean_depth"], ["rmse", "delta1"])
    assert 0 <= methods["maskdepth"]["iou"] <= 1
    assert [t["px"] for t in data["targets"]] == [32] and isinstance(data["targets"][0]["iou_vs_seed"], bool)
    assert len(data["summary"]) == 2 and len(data["archives"]) == 2
    assert data["data_pipeline"]["rows"] and data["index"] and data["epoch_workers"]["rows"] and data["make_data"]
    assert data["timings"][-1]["section"] == "total"
    for png in ("compare_32.png", "curves.png"):
        path = pictures / png
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    # every table of report.json renders (the per-size ones name 64 and 192 px; the smoke run is 32 px)
    tables = _render_all("report", data, skip=("_64", "_192"))
    assert "| 32 | MaskDepthNet |" in tables["report.summary"]
    assert "–" not in tables["report.data_pipeline"]
    assert "`python -m benchmarks.report --smoke" in tables["report.meta"]
    assert render.render_table("report.runs_64", {"quality": {"64": data["quality"]["32"]}})


def test_bench_quality_smoke_writes_its_figures(tmp_path):
    out = tmp_path / "quality.json"
    quality.main(["--smoke", "--minutes", "0.05", "--ablation-epochs", "1", "--work", str(tmp_path / "work"),
                  "--out", str(out), "--pictures", str(tmp_path / "pictures")])
    data = json.loads(out.read_text())
    _meta_ok(data["meta"], "quality", "--smoke")
    assert set(data["budget"]) == {"diverse", "s15"}
    for run in data["budget"].values():  # the budget was enforced: one short epoch each
        assert run["curve"] and all(0 <= p["unseen_delta1"] <= 1 for p in run["curve"]) and run["bands"]
        assert _finite(run, ["unseen_delta1", "unseen_rmse", "unseen_abs_rel", "unseen_iou"])
    assert [b["method"].split(" of the ")[-1] for b in data["baselines"][:2]] == ["diverse training split",
                                                                                 "s15 training split"]
    assert [a["change"] for a in data["ablation"]] == ["old default", "scene diversity: 1,000 backgrounds",
                                                       "paired flip + crop 0.3"]
    assert data["ablation"][0]["step_time_rel"] == 1.0 and data["ablation"][2]["overrides"] == ["data.flip=true",
                                                                                                 "data.crop=0.3"]
    tables = _render_all("quality", data)
    assert "| MaskDepthNet, configs/quick.yaml | diverse |" in tables["quality.budget"]
    assert "| old default | s15 |" in tables["quality.ablation"]
    for png in ("quality_curves.png", "quality_unseen_diverse.png", "quality_unseen_s15.png"):
        assert (tmp_path / "pictures" / png).read_bytes()[:4] == b"\x89PNG"



def test_bench_quality_depth_set_writes_metric_and_scale_invariant_figures(tmp_path):
    """--ablation-set depth (issue 22): rows chosen with --rows, metric and scale-invariant figures side
    by side; a second --reuse invocation reports the finished run without training it again."""
    work, out = tmp_path / "work", tmp_path / "depth_scale.json"
    common = ["--smoke", "--ablation-set", "depth", "--ablation-epochs", "1", "--work", str(work),
              "--out", str(out), "--pictures", str(tmp_path / "pictures"), "--rows", "1"]
    quality.main(common)
    data = json.loads(out.read_text())
    _meta_ok(data["meta"], "quality", "--smoke --ablation-set depth")
    assert [r["change"] for r in data["ablation"]] == ["global scale head"]
    row = data["ablation"][0]
    assert row["overrides"] == "model.scale_head=true" and row["step_time_rel"] == 1.0
    assert _finite(row, [f"{w}_{k}" for w in ("unseen", "val") for k in quality.EVAL_KEYS])
    assert set(data["curves"]) == {"depth1"} and len(data["curves"]["depth1"]) == 1
    assert (tmp_path / "pictures" / "depth_unseen_depth1.png").read_bytes()[:4] == b"\x89PNG"
    assert "| global scale head | `model.scale_head=true` | s15 |" in render.render_table("depth_scale.ablation", data)

    quality.main([*common, "--reuse"])  # reused: no training, the same figures
    again = json.loads(out.read_text())
    assert again["meta"]["runs_reused"] == "1 of 1" and again["ablation"] == data["ablation"]



def test_finetune_plan_gives_the_steps_in_about_evals_epochs():
    assert finetune.plan(300, 160, 6) == (6, 50)  # the defaults at 192 px: 1,280 train samples, batch 8
    assert finetune.plan(300, 40, 8) == (8, 38)  # no epoch longer than the split
    assert finetune.plan(3, 100, 10) == (3, 1)


def test_bench_finetune_smoke_compares_scratch_with_the_low_resolution_start(tmp_path):
    out, work = tmp_path / "finetune.json", tmp_path / "work"
    finetune.main(["--smoke", "--work", str(work), "--out", str(out)])
    data = json.loads(out.read_text())
    _meta_ok(data["meta"], "finetune", "--smoke")
    assert data["meta"]["sources"] and all((render.REPO / s).exists() for s in data["meta"]["sources"])
    figures = [f"{split}_{k}" for split in ("val", "unseen") for k in finetune.KEYS]
    runs = {r["run"]: r for r in data["runs"]}
    assert list(runs) == ["scratch", "from64"] and runs["from64"]["init"] == "32 px weights"
    for row in runs.values():
        assert _finite(row, [*figures, "steps", "training_s", "total_s"]), row["run"]
        assert row["steps"] == data["settings"]["steps"] > 0
    assert runs["scratch"]["steps_to_iou"] is not None and runs["scratch"]["stage_s"] == 0  # its own final value
    assert data["stage64"]["seconds"] > 0 and runs["from64"]["stage_s"] == pytest.approx(data["stage64"]["seconds"],
                                                                                         abs=0.05)
    curves = data["curves"]
    assert [p["steps"] for p in curves["scratch"]] == [p["steps"] for p in curves["from64"]]
    assert curves["scratch"][0]["steps"] == 0 and len(curves["scratch"]) == data["settings"]["epochs"] + 1
    assert all(_finite(p, figures) for c in curves.values() for p in c)
    # step 0: the weights were loaded (from64 starts elsewhere than scratch's random init)
    assert any(curves["from64"][0][k] != curves["scratch"][0][k] for k in figures)
    # --init CKPT reads the same stage back from the checkpoint
    stage = finetune.stage_from(work / "stage64" / "checkpoints" / "last.pt")
    assert (stage["size"], stage["steps"]) == (data["stage64"]["size"], data["stage64"]["steps"]) == (32, 3)
    assert stage["seconds"] == pytest.approx(data["stage64"]["seconds"], abs=1e-3)
    tables = _render_all("finetune", data)
    assert "| scratch | random | 4 |" in tables["finetune.runs"] and "| from64 | 32 px weights | 4 |" in \
        tables["finetune.runs"]
    assert tables["finetune.reach"] and tables["finetune.curves"].count("| from64 |") == 3
    assert "`python -m benchmarks.finetune --smoke" in tables["finetune.meta"]


def test_bench_long_run_smoke_writes_every_epoch_and_where_it_levels_off(tmp_path):
    out, work, pictures = tmp_path / "long_run.json", tmp_path / "work", tmp_path / "pictures"
    common = ["--smoke", "--epochs", "2", "--work", str(work), "--out", str(out), "--pictures", str(pictures)]
    long_run.main(common)
    data = json.loads(out.read_text())
    _meta_ok(data["meta"], "long_run", "--smoke --epochs 2")
    assert data["meta"]["sources"] and all((render.REPO / s).exists() for s in data["meta"]["sources"])
    curve = data["curve"]
    assert [p["epoch"] for p in curve] == [1, 2] and curve[-1]["steps"] == data["settings"]["steps"] > 0
    assert curve[0]["minutes"] <= curve[1]["minutes"]
    figures = [f"{w}_{k}" for w in ("train", "val", "unseen") for k in long_run.KEYS]
    assert all(_finite(p, figures) for p in curve)
    assert [r["figure"] for r in data["level_off"]] == [k for k, _ in long_run.WATCH]
    assert _finite(data["baseline"], ["delta1", "delta1_ms", "rmse"])
    swap = data["object_swap"]  # the same held-out scenes, with the objects of either archive
    assert [r["val_of"] for r in swap] == ["diverse", "objects"] and swap[0]["images"] == swap[1]["images"] > 0
    assert all(_finite(r, [f"{w}_{k}" for w in ("all", "inside", "outside") for k in long_run.SWAP_KEYS])
               for r in swap)
    for picture in ("long_run_curves.png", "long_run_unseen.png"):
        assert (pictures / picture).read_bytes()[:4] == b"\x89PNG"
    tables = _render_all("long_run", data)
    assert len(tables["long_run.curve"].splitlines()) == 2 + 2 and "`python -m benchmarks.long_run --smoke" in \
        tables["long_run.meta"]
    long_run.main([*common, "--reuse"])  # the finished run is reported again, not rerun
    again = json.loads(out.read_text())
    assert again["meta"]["reused"] is True and again["curve"] == curve
    # the same 1,000 scenes with objects dealt from a larger pool: its own run, data file and pictures
    other = tmp_path / "objects.json"
    long_run.main(["--smoke", "--epochs", "1", "--archive", "objects", "--work", str(work), "--out", str(other),
                   "--pictures", str(pictures)])
    data = json.loads(other.read_text())
    assert data["settings"]["archive"] == "objects" and data["settings"]["archives"]["objects"]["fg_per_bg"] == 2
    assert len(data["curve"]) == 1 and data["baseline"]["method"].endswith("objects training split")
    tables = _render_all("long_run_objects", data)
    assert len(tables["long_run_objects.object_swap"].splitlines()) == 2 + 2
    assert (work / "long_objects").is_dir() and (pictures / "long_run_objects_unseen.png").is_file()
