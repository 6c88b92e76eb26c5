"""`bash benchmarks/gpu.sh --dry-run` (issue 25): every code path of the GPU benchmark on the CPU,
so that the first run on a Colab GPU cannot fail on a typo. It writes every cell of the T4 matrix
(64/192 px x fp32/fp16/bf16 x torch.compile x channels_last), the training run, the loader's rate,
the peak-memory fields and the resume parity check to a temporary file, and leaves docs/results
alone. What the dry run cannot check (a code generator, CUDA itself): benchmarks/gpu.py's docstring."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
from pathlib import Path

import pytest

from maskdepth.runtime import cpu_fp16_unsupported

from conftest import REPO, run_process_group

pytestmark = pytest.mark.slow  # about a minute on 2 idle cores, two with a busy neighbour

NO_FP16 = cpu_fp16_unsupported()


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _measured(row: dict) -> bool:
    return isinstance(row.get("train_ips"), (int, float)) and math.isfinite(row["train_ips"]) and row["train_ips"] > 0


def test_gpu_sh_dry_run_writes_every_cell_on_the_cpu_and_leaves_docs_results_alone(tmp_path: Path) -> None:
    results = REPO / "docs" / "results"
    before = _snapshot(results)
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = run_process_group(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run"], env=env, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    assert _snapshot(results) == before, "the dry run changed docs/results"

    data = json.loads((tmp_path / "gpu_dry_run.json").read_text())
    assert "errors" not in data, data["errors"]
    meta = data["meta"]
    assert meta["dry_run"] is True and meta["device"] == "cpu" and meta["command"] == "bash benchmarks/gpu.sh --dry-run"

    # the T4 matrix: every cell, each measured or (fp16 where this torch has no CPU fp16) its error
    cells = {(r["size"], r["amp"], r["compile"], r["channels_last"]): r for r in data["precision"]}
    expected = set(itertools.product((64, 192), ("fp32", "fp16", "bf16"), (False, True), (False, True)))
    assert set(cells) == expected and len(data["precision"]) == len(expected)
    for cell, row in cells.items():
        assert "peak_mem_mb" in row, row
        if cell[1] == "fp16" and NO_FP16:
            assert row.get("error"), row
        else:
            assert _measured(row) and "error" not in row, row

    # bench_model: both networks uncompiled, MaskDepthNet compiled too
    models = {(r["model"], r["compile"]): r for r in data["bench_model"]}
    assert set(models) == {("maskdepth", False), ("seed", False), ("maskdepth", True)}
    assert all(_measured(r) and r["infer_ips"] > 0 and "peak_mem_mb" in r for r in models.values())

    train = data["train"]
    assert train["img_s"] > 0 and train["steps"] >= 1 and "peak_mem_mb" in train
    assert f"train.amp={'bf16' if NO_FP16 else 'fp16'}" in train["overrides"]
    loader = data["loader"]
    assert loader["loader_ips"] > 0 and loader["step_ips"] > 0 and loader["loader_over_step"] > 0
    assert data["resume"] == {"bit_exact": True, "max_abs_diff": 0.0}
