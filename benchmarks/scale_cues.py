"""python benchmarks/scale_cues.py CHECKPOINT [ARCHIVE] [--out docs/results/scale_cues]

Where does the depth scale go wrong? Issue 22, item 2. For every image of ARCHIVE (a make-data zip
with its scenes.csv side table; issue 22 uses the `unseen` archive, seed 1) this measures the
checkpoint's scale error, median(pred / true) over the image's valid pixels (above 1: predicted
too far), and relates it to what made the scene: camera height, pitch, field of view, scene kind,
the pasted object's pixel height and foot row, and the scene's true median depth. Writes

    OUT.csv    one row per image: the scene columns, scale_ratio, delta1, delta1_ms
    OUT.json   per cue: Spearman's rank correlation with log(scale_ratio) and the median ratio per
               quartile of the cue (per kind for scene_kind); how much of the log scale error a
               linear fit on all cues explains (R^2); the overall figures
    OUT.png    one scatter panel per cue (log scale ratio against the cue), a box per scene kind

Uses the package's public API only (maskdepth.inference, maskdepth.data, maskdepth.metrics).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import meta

REPO = Path(__file__).resolve().parents[1]
NUMERIC_CUES = ("camera_height_m", "camera_pitch_deg", "fov_deg", "horizon_row", "object_height_px",
                "object_foot_row", "object_distance_m", "median_depth_m")
KIND_CUE = "scene_kind"
# what the figures depend on (tests/test_figures.py: a newer commit of one of them marks them stale)
SOURCES = ("benchmarks/scale_cues.py", "src/maskdepth/model/maskdepthnet.py", "src/maskdepth/synth/scene.py",
           "src/maskdepth/train.py", "src/maskdepth/losses.py")


def per_image(checkpoint: Path, archive: Path, batch_size: int = 64) -> list[dict[str, Any]]:
    """One dict per image of `archive` (its "all" split, at the checkpoint's data.size): name,
    scale_ratio = median(pred / true) over valid pixels (true > 1e-3, pred clamped to [1e-3, 1]),
    delta1, delta1_ms, joined with its scenes.csv row."""
    import torch

    from maskdepth.data import collate, open_dataset, read_scene_table
    from maskdepth.inference import load_model
    from maskdepth.metrics import depth_metrics

    scenes = read_scene_table(archive)
    if scenes is None:
        raise SystemExit(f"{archive} has no scenes.csv side table (make it again with make-data)")
    by_name = {Path(row["fg_bg"]).stem: row for row in scenes}
    model, cfg = load_model(checkpoint, "cpu")
    loader = torch.utils.data.DataLoader(open_dataset(archive, cfg.data.size, "all"), batch_size=batch_size,
                                         collate_fn=collate)
    rows = []
    with torch.no_grad():
        for batch in loader:
            pred = model(batch["bg"], batch["fg_bg"])[1].float().clamp(1e-3, 1.0)
            true = batch["depth"]
            figures = depth_metrics(pred, true, reduction="none")
            for i, name in enumerate(batch["name"]):
                valid = true[i] > 1e-3
                ratio = float((pred[i][valid] / true[i][valid]).median()) if valid.any() else math.nan
                rows.append({**by_name[name], "name": name, "scale_ratio": ratio,
                             "delta1": float(figures["delta1"][i]), "delta1_ms": float(figures["delta1_ms"][i])})
    return rows


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731 (no ties in practice)
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cue: Spearman's rho with log(scale_ratio), over images and over backgrounds (means per
    bg_id: the camera and the kind are drawn once per background, so its images are not independent),
    the median ratio per quartile (per kind for scene_kind); the share of the variance of
    log(scale_ratio) that lies between backgrounds; the R^2 of a least-squares fit of
    log(scale_ratio) on all cues (kinds one-hot)."""
    rows = [r for r in rows if math.isfinite(r["scale_ratio"])]
    log_ratio = np.log([r["scale_ratio"] for r in rows])
    out: dict[str, Any] = {"images": len(rows), "median_scale_ratio": float(np.exp(np.median(log_ratio))),
                           "share_too_near_by_25pct": float(np.mean(log_ratio < -math.log(1.25))),
                           "share_too_far_by_25pct": float(np.mean(log_ratio > math.log(1.25))),
                           "delta1": float(np.mean([r["delta1"] for r in rows])),
                           "delta1_ms": float(np.mean([r["delta1_ms"] for r in rows])), "cues": {}}
    groups = _by_background(rows)
    bg_log_ratio = np.array([np.mean(log_ratio[idx]) for idx in groups])
    # the camera and the scene kind are drawn once per background: how much of the error is per scene
    out["backgrounds"] = len(groups)
    out["share_of_log_ratio_variance_between_backgrounds"] = float(
        sum(len(idx) * (m - log_ratio.mean()) ** 2 for idx, m in zip(groups, bg_log_ratio, strict=True))
        / (len(log_ratio) * log_ratio.var()))
    for cue in NUMERIC_CUES:
        x = np.array([float(r[cue]) for r in rows])
        edges = np.quantile(x, [0, 0.25, 0.5, 0.75, 1])
        bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 3)
        out["cues"][cue] = {"spearman_log_ratio": _spearman(x, log_ratio),
                            "spearman_per_background": _spearman(np.array([x[idx].mean() for idx in groups]),
                                                                 bg_log_ratio),
                            "quartiles": [{"lo": float(edges[b]), "hi": float(edges[b + 1]),
                                           "median_scale_ratio": float(np.exp(np.median(log_ratio[bins == b])))}
                                          for b in range(4) if (bins == b).any()]}
    kinds = sorted({r[KIND_CUE] for r in rows})
    by_kind = {k: [lr for r, lr in zip(rows, log_ratio, strict=True) if r[KIND_CUE] == k] for k in kinds}
    out["cues"][KIND_CUE] = {k: {"images": len(by_kind[k]), "median_scale_ratio": float(np.exp(np.median(by_kind[k])))}
                             for k in kinds}
    out["r2_linear_fit"] = _r2(rows, log_ratio, kinds, NUMERIC_CUES)
    out["r2_linear_fit_without_true_depth"] = _r2(rows, log_ratio, kinds,
                                                  [c for c in NUMERIC_CUES if c not in ("median_depth_m",
                                                                                       "object_distance_m")])
    return out


def _by_background(rows: list[dict[str, Any]]) -> list[np.ndarray]:
    """The row indices of each background (bg_id), in first-seen order."""
    index: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        index.setdefault(str(r["bg_id"]), []).append(i)
    return [np.array(v) for v in index.values()]


def _r2(rows: list[dict[str, Any]], y: np.ndarray, kinds: list[str], cues: Any) -> float:
    """R^2 of least squares of y on the cues (standardised), one-hot kinds and an intercept."""
    columns = [np.array([float(r[c]) for r in rows]) for c in cues]
    columns = [(c - c.mean()) / (c.std() or 1.0) for c in columns]
    columns += [np.array([float(r[KIND_CUE] == k) for r in rows]) for k in kinds]  # the intercept too
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return float(1 - residual.var() / y.var())


def plot(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str) -> Path:
    """A scatter panel per numeric cue (log2 scale ratio against it), a box per scene kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if math.isfinite(r["scale_ratio"])]
    y = np.log2([r["scale_ratio"] for r in rows])
    fig, axes = plt.subplots(3, 3, figsize=(12, 10))
    for ax, cue in zip(axes.flat, NUMERIC_CUES, strict=False):
        ax.scatter([float(r[cue]) for r in rows], y, s=4, alpha=0.4)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel(cue)
        ax.set_title(f"Spearman ρ = {summary['cues'][cue]['spearman_log_ratio']:+.2f} (images), "
                     f"{summary['cues'][cue]['spearman_per_background']:+.2f} (backgrounds)", fontsize=9)
    kinds = sorted(summary["cues"][KIND_CUE])
    ax = axes.flat[len(NUMERIC_CUES)]
    ax.boxplot([[v for r, v in zip(rows, y, strict=True) if r[KIND_CUE] == k] for k in kinds], showfliers=False)
    ax.set_xticks(range(1, len(kinds) + 1), kinds)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel(KIND_CUE)
    for ax in axes[:, 0]:
        ax.set_ylabel("log2 median(pred / true)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("archive", type=Path, nargs="?", default=Path("runs/bench_quality/unseen.zip"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "scale_cues",
                        help="writes OUT.csv, OUT.json and OUT.png")
    parser.add_argument("--label", default="", help="what the checkpoint is, for the plot's title and the JSON")
    args = parser.parse_args(argv)
    rows = per_image(args.checkpoint, args.archive)
    summary = summarise(rows)
    summary.update(checkpoint=str(args.checkpoint), archive=str(args.archive), label=args.label)
    summary = {"meta": meta("scale_cues", list(argv if argv is not None else sys.argv[1:]), sources=list(SOURCES)),
               **summary}
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    plot(rows, summary, out.with_suffix(".png"),
         f"scale error per unseen image vs what made the scene: {args.label or args.checkpoint}")
    print(json.dumps({k: v for k, v in summary.items() if k != "cues"}, indent=1))
    for cue in NUMERIC_CUES:
        print(f"{cue:20s} rho {summary['cues'][cue]['spearman_log_ratio']:+.2f} "
              f"(per bg {summary['cues'][cue]['spearman_per_background']:+.2f})  quartile medians "
              + " ".join(f"{q['median_scale_ratio']:.2f}" for q in summary["cues"][cue]["quartiles"]))
    print({k: round(v["median_scale_ratio"], 2) for k, v in summary["cues"][KIND_CUE].items()})
    return summary


if __name__ == "__main__":
    main()
