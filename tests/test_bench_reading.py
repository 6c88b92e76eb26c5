"""How the benchmarks read their runs, on hand-computed values: benchmarks/long_run.py (where a curve
levels off) and benchmarks/quality.py (an ablation's seeds taken together). Their end-to-end smoke
runs are in tests/test_benchmark.py."""

from __future__ import annotations

import pytest

from benchmarks import long_run, quality, render


def _points(delta1: list[float], rmse: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "steps": 100 * (i + 1), "minutes": 2.0 * (i + 1), "unseen_delta1": d,
             "unseen_delta1_ms": d + 0.2, "unseen_rmse": r} for i, (d, r) in enumerate(zip(delta1, rmse, strict=True))]


def test_level_off_finds_where_each_figure_stays_near_its_best():
    points = _points([0.40, 0.55, 0.62, 0.60, 0.63, 0.625], [0.20, 0.12, 0.10, 0.095, 0.094, 0.0935])
    rows = {r["figure"]: r for r in long_run.level_off(points, tolerance=0.01)}
    d1 = rows["unseen_delta1"]
    # best 0.63 at step 500; 0.60 at step 400 is 0.03 below it, so it settles at step 500, not 300
    assert (d1["best"], d1["best_step"], d1["last"]) == (0.63, 500, 0.625)
    assert (d1["settled_step"], d1["settled_minutes"]) == (500, 10.0)
    # the last third starts at the first step >= 600 * 2 / 3 = 400: 0.625 - 0.60
    assert d1["last_third_from_step"] == 400 and d1["last_third_gain"] == pytest.approx(0.025)
    assert rows["unseen_delta1_ms"]["settled_step"] == 500
    # RMSE: lower is better; best 0.0935 (step 600), within 0.01 from step 300 (0.10)
    rmse = rows["unseen_rmse"]
    assert (rmse["best"], rmse["best_step"], rmse["settled_step"]) == (0.0935, 600, 300)
    assert rmse["last_third_gain"] == pytest.approx(0.095 - 0.0935)  # positive: better


def test_level_off_of_a_curve_still_rising_is_its_last_point():
    points = _points([0.3, 0.4, 0.5, 0.6], [0.3, 0.2, 0.15, 0.12])
    rows = {r["figure"]: r for r in long_run.level_off(points, tolerance=0.01)}
    assert rows["unseen_delta1"]["settled_step"] == 400 and rows["unseen_rmse"]["settled_step"] == 400
    assert rows["unseen_delta1"]["last_third_gain"] == pytest.approx(0.1)  # from step 300 (the first >= 266.7)


def _row(change: str, archive: str, d1: float, rmse: float) -> dict:
    return {"change": change, "archive": archive, "unseen_delta1": d1, "unseen_delta1_ms": d1 + 0.2,
            "unseen_abs_rel": 0.25, "unseen_rmse": rmse, "unseen_iou": 0.87}


def test_seed_summary_takes_the_seeds_of_one_change_together():
    rows = [_row("configs/quick.yaml", "s15", 0.579, 0.1046), _row("global scale head", "s15", 0.563, 0.1057),
            _row("configs/quick.yaml, seed 1", "s15", 0.533, 0.1092), _row("configs/quick.yaml", "diverse", 0.62, 0.09),
            _row("configs/quick.yaml, seed 2", "s15", 0.561, 0.1060)]
    (summary,) = quality.seed_summary(rows)  # one change with two seeds or more; other archives apart
    assert (summary["change"], summary["archive"], summary["seeds"]) == ("configs/quick.yaml", "s15", 3)
    assert summary["unseen_delta1_mean"] == pytest.approx((0.579 + 0.533 + 0.561) / 3, abs=1e-4)
    assert (summary["unseen_delta1_min"], summary["unseen_delta1_max"]) == (0.533, 0.579)
    assert (summary["unseen_rmse_min"], summary["unseen_rmse_max"]) == (0.1046, 0.1092)
    assert "| configs/quick.yaml | s15 | 3 | 0.558 (0.533 – 0.579) |" in \
        render.render_table("depth_scale.seeds", {"seeds": [summary]})


def test_archive_rows_count_the_objects_each_scene_gets():
    specs = {"all": dict(num_bg=5, num_fg=3, per_pair=2, seed=0, size=32),
             "dealt": dict(num_bg=5, num_fg=30, fg_per_bg=3, per_pair=1, seed=1, size=32)}
    rows = {r["name"]: r for r in quality.archive_rows(specs)}
    assert (rows["all"]["fg_per_bg"], rows["all"]["samples"]) == (3, 5 * 3 * 2 * 2)
    assert (rows["dealt"]["num_fg"], rows["dealt"]["fg_per_bg"], rows["dealt"]["samples"]) == (30, 3, 5 * 3 * 2 * 1)
    table = render.render_table("quality.archives", {"archives": list(rows.values())})
    assert "| dealt | 5 | 30 | 3 | 2 | 1 | 30 |" in table
