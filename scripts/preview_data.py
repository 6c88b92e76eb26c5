"""python scripts/preview_data.py DATA.zip --out preview.png [--n 8] [--seed 0]

Save a labelled grid of a few samples of a dataset archive: one row per sample, columns
bg | fg_bg | mask | depth (depth with a fixed colour range: 0 = near, 1 = far), the row title
giving the sample's name and, where the manifest has them, its placement and mask coverage.
Reads the zip and its manifest.csv directly, so it also works on archives from other tools
that follow the archive layout of docs/architecture.md (columns fg_bg, bg, mask, depth).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def _load(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """An entry as float32 in [0,1]: [H,W,3] for colour, [H,W] for grayscale (8 or 16 bit)."""
    img = Image.open(io.BytesIO(zf.read(name)))
    arr = np.asarray(img)
    if img.mode in ("I;16", "I;16B", "I"):
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32) / 255.0


def pick_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """n rows spread over the archive (different backgrounds and objects), reproducibly."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
    return [rows[i] for i in idx]


def save_preview(data: str | Path, out: str | Path, n: int = 8, seed: int = 0) -> Path:
    """Write the grid of `n` samples of `data` to `out` (PNG) and return its path."""
    with zipfile.ZipFile(data) as zf:
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open("manifest.csv"), encoding="utf-8")))
        chosen = pick_rows(rows, n, seed)
        fig = Figure(figsize=(4 * 2.0 + 0.4, len(chosen) * 2.2 + 0.3), dpi=110)
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(chosen), 4, squeeze=False)
        titles = ("bg", "fg_bg", "mask", "depth (near 0 .. 1 far)")
        for r, row in enumerate(chosen):
            images = [_load(zf, row[key]) for key in ("bg", "fg_bg", "mask", "depth")]
            for c, (ax, img) in enumerate(zip(axes[r], images, strict=True)):
                if c == 3:
                    shown = ax.imshow(img, cmap="magma_r", vmin=0.0, vmax=1.0, interpolation="nearest")
                elif img.ndim == 2:
                    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                else:
                    ax.imshow(img, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(titles[c], fontsize=9)
            label = Path(row["fg_bg"]).stem
            if "coverage" in row:
                kinds = f"{row.get('bg_kind', '')}/{row.get('fg_kind', '')}"
                label += f"  {kinds}  mask {100 * float(row['coverage']):.1f}%"
            if "distance" in row:
                label += f"  at {float(row['distance']):.1f} m"
            axes[r][0].text(0.0, -0.04, label, transform=axes[r][0].transAxes, fontsize=7, va="top", ha="left")
        fig.subplots_adjust(left=0.01, right=0.9, top=1 - 0.3 / fig.get_figheight(), bottom=0.02,
                            wspace=0.04, hspace=0.14)
        cax = fig.add_axes((0.915, 0.3, 0.02, 0.4))
        fig.colorbar(shown, cax=cax, label="depth")
        out = Path(out)
        fig.savefig(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="dataset zip with manifest.csv")
    parser.add_argument("--out", default="preview.png", help="PNG to write (default preview.png)")
    parser.add_argument("--n", type=int, default=8, help="number of samples (rows)")
    parser.add_argument("--seed", type=int, default=0, help="which samples to pick")
    args = parser.parse_args(argv)
    try:
        path = save_preview(args.data, args.out, n=args.n, seed=args.seed)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        print(f"preview_data: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
