"""scripts/benchmark.py and scripts/bench_quality.py: the report generators, run end to end with --smoke
(their classical baselines: tests/test_baselines.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _numbers(cells: list[str]) -> list[float]:
    return [float(c.replace(",", "")) for c in cells if re.fullmatch(r"-?[\d,]+(\.\d+)?", c)]


def _row(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(f"| {label}"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no table row starting with {label!r} in the report")


def test_plan_steps_spends_the_budget(benchmark):
    # 10 s at 16 img/s with batch 8 = 20 steps; 100 train samples = 12 full steps per epoch
    assert benchmark.plan_steps(10, 16, 8, 100, epochs=4) == (4, 5, 20)
    # more steps than epochs x full epochs: whole epochs, as many as needed
    assert benchmark.plan_steps(100, 16, 8, 100, epochs=4) == (17, 0, 17 * 12)
    assert benchmark.plan_steps(0.1, 1, 8, 100, epochs=4) == (1, 1, 1)


def test_smoke_report_has_every_section_with_finite_numbers(benchmark, tmp_path):
    out = tmp_path / "docs" / "results.md"
    gpu = tmp_path / "gpu.json"
    benchmark.main(["--smoke", "--out", str(out), "--gpu-json", str(gpu), "--work", str(tmp_path)])
    text = out.read_text()
    for heading in ("## Summary", "## 1. Quality on unseen scenes", "## 2. Training speed", "### Data pipeline",
                    "## 3. Scaling", "### Index time and memory", "### Epoch time vs DataLoader workers",
                    "## 4. Pictures", "## 5. GPU"):
        assert heading in text
    assert "python scripts/benchmark.py --smoke" in text and "torch " + torch.__version__ in text
    for label in ("MaskDepthNet (maskdepth)", "seed baseline (seed)", "background subtraction"):
        numbers = _numbers(_row(text, label)[1:])
        assert numbers and all(math.isfinite(v) for v in numbers), label
    iou = _numbers(_row(text, "MaskDepthNet (maskdepth)")[1:2])[0]
    assert 0 <= iou <= 1
    assert "Not measured yet" in text
    for png in ("compare_32.png", "curves.png"):
        path = out.parent / "results" / png
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    assert "Pending" not in text  # bench_data ran

    # a GPU figures file is rendered into the section in place
    gpu.write_text(json.dumps({
        "date": "2026-01-01 00:00 UTC", "gpu": "Test GPU", "torch": "2.x", "cuda": "12.x", "command": "bash scripts/bench_gpu.sh",
        "bench_model": [{"model": "maskdepth", "size": 64, "batch": 256, "compile": False, "train_ips": 1234.5,
                         "infer_ips": 5678.0, "peak_mem_mb": 999.0}],
        "train": None,
    }))
    benchmark.main(["--gpu-only", "--out", str(out), "--gpu-json", str(gpu)])
    updated = out.read_text()
    assert "Not measured yet" not in updated and "Test GPU" in updated and "1234" in updated
    assert updated.split("## 5. GPU")[0] == text.split("## 5. GPU")[0]


def test_bench_quality_smoke_writes_its_section_and_keeps_the_rest(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_quality_script", REPO / "scripts" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    out.write_text("# Results\n\nkept before\n\n<!-- quality:begin -->\nold section\n<!-- quality:end -->\n\nkept after\n")
    module.main(["--smoke", "--minutes", "0.05", "--ablation-epochs", "1", "--work", str(tmp_path / "work"),
                 "--out", str(out)])
    text = out.read_text()
    assert "kept before" in text and "kept after" in text and "old section" not in text
    assert text.count("<!-- quality:begin -->") == 1 and "## Generalisation to unseen scenes" in text
    for label in ("MaskDepthNet, configs/quick.yaml | diverse", "MaskDepthNet, configs/quick.yaml | s15",
                  "mean-depth predictor of the s15", "old default", "background subtraction (Otsu)"):
        numbers = _numbers(_row(text, label)[1:])
        assert numbers and all(math.isfinite(v) for v in numbers), label
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    for run in results["budget"]:  # the budget was enforced: one short epoch each
        assert run["curve"] and all(0 <= p["unseen_delta1"] <= 1 for p in run["curve"])
    for png in ("quality_curves.png", "quality_unseen_diverse.png", "quality_unseen_s15.png"):
        path = out.parent / "results" / png
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_regenerating_the_report_keeps_the_blocks_other_scripts_own(benchmark):
    old = ("# old report\n\n<!-- quality:begin -->\nquality\n<!-- quality:end -->\n\nstale text\n\n"
           "<!-- fullsize:begin -->\nfull size\n<!-- fullsize:end -->\n")
    text = benchmark.carry_blocks(old, "# new report\n")
    assert text.startswith("# new report\n") and "stale text" not in text and "old report" not in text
    assert "<!-- quality:begin -->\nquality\n<!-- quality:end -->" in text
    assert "<!-- fullsize:begin -->\nfull size\n<!-- fullsize:end -->" in text
    assert benchmark.carry_blocks("", "# new\n") == "# new\n"
