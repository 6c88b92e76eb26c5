"""Figures that are still true: every data file under docs/results names the source files its
figures depend on (meta.sources); a figure older than a source's last commit must say so
(meta.stale, printed under its tables by benchmarks/render.py) or record that it was checked
later and still holds (meta.still_valid: {date, why})."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

DATA_FILES = sorted((REPO / "docs" / "results").glob("*.json"))


def _last_commit_date(path: str) -> str:
    done = subprocess.run(["git", "log", "-1", "--format=%cI", "--", path], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip()[:10]


@pytest.fixture(scope="module", autouse=True)
def _git_checkout() -> None:
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True, text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip("not a git checkout: the source files' commit dates are unknown")


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_a_figure_is_newer_than_its_sources_or_says_it_is_stale_or_still_valid(path: Path) -> None:
    meta = json.loads(path.read_text(encoding="utf-8"))["meta"]
    sources = meta.get("sources")
    assert sources, f"{path.name}: meta.sources must name the source files its figures depend on"
    missing = [s for s in sources if not (REPO / s).exists()]
    assert not missing, f"{path.name}: meta.sources names files that do not exist: {missing}"
    checked = max(meta["date"][:10], meta.get("still_valid", {}).get("date", "")[:10])
    newer = {s: d for s in sources if (d := _last_commit_date(s)) > checked}
    if not newer:
        return
    stale = meta.get("stale")
    assert stale and stale.get("why") and set(newer) <= set(stale.get("files", [])), (
        f"{path.name} was measured on {meta['date']} but its sources changed since: {newer}; re-measure, "
        "record meta.still_valid {date, why}, or mark it meta.stale {since, files, why}")


def test_the_renderer_prints_the_stale_note() -> None:
    from benchmarks import render

    data = {"meta": {"stale": {"since": "2026-12-07", "files": ["a.py"], "why": "the decoders changed"}}}
    assert "Stale: source changed since the measurement (a.py, 2026-12-07): the decoders changed" in \
        render.stale_note(data)
    assert render.stale_note({"meta": {}}) == ""
