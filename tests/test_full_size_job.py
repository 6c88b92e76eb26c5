"""benchmarks/full_size_job.py: its memory sampling, and the whole job scaled down to 16 samples."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks import full_size_job as job
from benchmarks import render

from conftest import run_process_group

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
STEPS = ["make-data", "check-data", "open memory", "open mmap", "twice memory", "twice mmap", "loader memory",
         "loader mmap"]


def test_run_step_sees_the_peak_of_a_grandchild(tmp_path):
    """A process started by the step's process counts: its 100 MB show in the tree's RSS and PSS
    and in the largest process's peak (wait4), and the step's last JSON line becomes its result."""
    grandchild = "x = bytearray(100 * 2**20); import time; time.sleep(1.0)"
    code = (f"import subprocess, sys, json; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True); "
            "print(json.dumps({'seconds': 1.5, 'n': 3}))")
    step = job.run_step("probe", [sys.executable, "-c", code], tmp_path)
    assert step.status == 0
    assert step.processes == 2
    assert step.self_peak_mb >= 100
    assert step.tree_rss_mb >= 100 and step.tree_pss_mb >= 100 and step.tree_anon_mb >= 100
    assert step.work_s == 1.5 and step.result["n"] == 3
    assert (tmp_path / "probe.log").exists()


def test_run_step_reports_a_failure(tmp_path):
    step = job.run_step("fails", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    assert step.status == 3 and step.work_s is None
    assert job.step_row(step)["status"] == 3 and job.console([step]).splitlines()[-1].split()[-1] == "3"


def _run_job(out_dir: Path, *steps: str, reuse: bool = False) -> tuple[dict[str, dict], dict, dict]:
    """The job at 16 samples (32 px), one loader worker: (steps by name, the raw record, the data file)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "benchmarks.full_size_job", "--out-dir", str(out_dir), "--size", "32", "--num-bg", "4",
           "--num-fg", "2", "--per-pair", "1", "--workers", "1", "--loader-samples", "8", "--loader-workers", "1",
           "--batch-size", "4", "--out", str(out_dir / "figures.json"), *(["--steps", *steps] if steps else []),
           *(["--reuse"] if reuse else [])]
    result = run_process_group(cmd, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "cores" in result.stdout and "GB RAM" in result.stdout
    saved = json.loads((out_dir / "full_size_job.json").read_text())
    figures = json.loads((out_dir / "figures.json").read_text())
    rows = {s["name"]: s for s in figures["steps"]}
    assert [s["name"] for s in saved["steps"]] == list(rows)
    assert saved["archive_bytes"] > 0 and all(s["status"] == 0 for s in saved["steps"])
    assert all(s["self_peak_mb"] > 0 and s["tree_rss_mb"] > 0 for s in figures["steps"])
    assert figures["meta"]["command"].startswith("python -m benchmarks.full_size_job --out-dir")
    return rows, saved, figures


def test_the_job_scaled_down_writes_its_figures(tmp_path):
    """Three of the steps (each starts a Python with torch), the data file they give, the tables
    benchmarks/render.py makes of it, and the same data file again from the raw record (--from-json)."""
    rows, saved, figures = _run_job(tmp_path, "make-data", "open-mmap", "loader-memory")
    assert list(rows) == ["make-data", "open mmap", "loader memory"]
    assert figures["open"][0]["samples"] == 16 and figures["open"][0]["entries"] == 55
    assert figures["loader"][0]["samples"] > 0 and figures["loader"][0]["samples_per_s"] > 0
    loader = saved["steps"][-1]
    # The main process, and its worker when a sample caught it alive (a 16-sample pass can end between
    # two samples on a busy machine; the sampling itself is tested above with a known grandchild).
    assert loader["processes"] in (1, 2) and loader["result"]["samples"] > 0
    assert figures["estimates"][0]["figure"].startswith("make-data") and "archive GB" in [
        e["figure"] for e in figures["estimates"]]
    tables = {name: render.render_table(name, figures) for name in render.TABLES if name.startswith("full_size_job.")}
    assert "| make-data |" in tables["full_size_job.steps"]
    assert "| open mmap | 16 | 55 |" in tables["full_size_job.open"]

    again = tmp_path / "again.json"
    script = [sys.executable, "-m", "benchmarks.full_size_job", "--from-json", str(tmp_path / "full_size_job.json"),
              "--out", str(again), "--command", "python -m benchmarks.full_size_job"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    assert run_process_group(script, env=env, timeout=120).returncode == 0
    redone = json.loads(again.read_text())
    assert redone["meta"]["command"] == "python -m benchmarks.full_size_job"
    assert redone["meta"]["date"] == figures["meta"]["date"] and redone["steps"] == figures["steps"]


def test_the_whole_job_scaled_down(tmp_path):
    rows, _, figures = _run_job(tmp_path)
    assert list(rows) == STEPS
    assert [r["name"] for r in figures["open"]] == ["open memory", "open mmap"] and figures["open"][0]["entries"] == 55
    assert figures["twice"][1]["rss_after_2_mb"] > 0 and figures["loader"][1]["samples_per_s"] > 0
    assert [c["in_memory"] for c in figures["colab"]] == [True, False]
    # --reuse skips make-data and measures the rest again
    rows, _, _ = _run_job(tmp_path, "make-data", "check-data", reuse=True)
    assert list(rows) == ["check-data"]
