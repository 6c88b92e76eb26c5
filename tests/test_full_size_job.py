"""scripts/full_size_job.py: its memory sampling, and the whole job scaled down to 16 samples."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import run_process_group

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "full_size_job.py"
STEPS = ["make-data", "check-data", "open memory", "open mmap", "twice memory", "twice mmap", "loader memory", "loader mmap"]


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("full_size_job_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_run_step_sees_the_peak_of_a_grandchild(job, tmp_path):
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


def test_run_step_reports_a_failure(job, tmp_path):
    step = job.run_step("fails", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    assert step.status == 3 and step.work_s is None
    assert "exit status 3" in job.table([step])[-1]


def _run_job(out_dir: Path, *steps: str, out: str | None = None, reuse: bool = False) -> tuple[dict[str, str], dict, str]:
    """The job at 16 samples (32 px), one loader worker: (table rows by step, the saved JSON, stdout)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(SCRIPT), "--out-dir", str(out_dir), "--size", "32", "--num-bg", "4", "--num-fg", "2",
           "--per-pair", "1", "--workers", "1", "--loader-samples", "8", "--loader-workers", "1", "--batch-size", "4",
           "--markdown", *(["--steps", *steps] if steps else []), *(["--reuse"] if reuse else []), *(["--out", out] if out else [])]
    result = run_process_group(cmd, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "cores" in result.stdout and "GB RAM" in result.stdout
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| step ")}
    saved = json.loads((out_dir / "full_size_job.json").read_text())
    assert [s["name"] for s in saved["steps"]] == list(rows)
    assert saved["archive_bytes"] > 0 and all(s["status"] == 0 for s in saved["steps"])
    assert all(s["self_peak_mb"] > 0 and s["tree_rss_mb"] > 0 for s in saved["steps"])
    return rows, saved, result.stdout


def test_the_job_scaled_down_prints_its_rows(tmp_path):
    """Three of the steps (what a fast test affords: each step starts a Python with torch), and
    the report block it writes into a markdown file, twice (the second replaces the first)."""
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept\n")
    rows, saved, _ = _run_job(tmp_path, "make-data", "open-mmap", "loader-memory", out=str(results))
    assert list(rows) == ["make-data", "open mmap", "loader memory"]
    assert "16 samples, 55 entries" in rows["open mmap"]
    assert "samples/s" in rows["loader memory"]
    loader = saved["steps"][-1]
    # The main process, and its worker when a sample caught it alive (a 16-sample pass can end between
    # two samples on a busy machine; the sampling itself is tested above with a known grandchild).
    assert loader["processes"] in (1, 2) and loader["result"]["samples"] > 0
    assert results.read_text().startswith("# Results\n\nkept\n\n<!-- fullsize:begin -->")
    notes = "<!-- fullsize:notes (kept by reruns) -->\nhand-written\n"
    results.write_text(results.read_text().replace("<!-- fullsize:end -->", notes + "<!-- fullsize:end -->"))

    script = [sys.executable, str(SCRIPT), "--from-json", str(tmp_path / "full_size_job.json"), "--out", str(results)]
    assert run_process_group(script, env=dict(os.environ), timeout=60).returncode == 0
    text = results.read_text()
    assert text.count("<!-- fullsize:begin -->") == 1 and text.count("<!-- fullsize:end -->") == 1
    assert "| make-data |" in text and "| open mmap |" in text and "### Against the README's estimates" in text
    assert notes + "<!-- fullsize:end -->" in text


@pytest.mark.slow
def test_the_whole_job_scaled_down(tmp_path):
    rows, saved, _ = _run_job(tmp_path)
    assert list(rows) == STEPS
    assert "16 samples, 55 entries" in rows["open memory"]
    assert "after section 2" in rows["twice mmap"]
    assert "samples/s" in rows["loader mmap"]
    # --reuse skips make-data and measures the rest again
    rows, _, _ = _run_job(tmp_path, "make-data", "check-data", reuse=True)
    assert list(rows) == ["check-data"]
