"""Small helpers for notebooks/train_colab.ipynb: data on local disk, resume status, run pictures.

    data_zip = copy_once(DRIVE_DIR / "s15.zip", "/content/data")     # once per runtime
    print(resume_message(run_dir, epochs=8))                          # where fit() will start
    show_grid(run_dir)                                                # the latest samples/epoch_NNN.png
    bg, fg_bg = extract_pair(data_zip, "/content/pair", split_json=run_dir / "split.json")

Nothing here trains: the notebook calls `maskdepth.config.load_config` and `maskdepth.train.fit`
like the command line does. Nothing here knows about Google Drive either: the notebook passes
the paths. The `show_*` functions display in a notebook (IPython); torch is imported only by
`resume_message`, to read a checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

# dataset_files and prepare_dataset are re-exported for the notebook
from maskdepth.data.localcopy import copy_once, dataset_files, prepare_dataset  # noqa: F401
from maskdepth.errors import DataError
from maskdepth.history import TABLE_COLUMNS  # metrics.csv columns `metrics_table` shows unless asked


def synthetic_once(
    folder: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """A synthetic dataset zip in `folder`, generated only if neither it nor a cached copy exists.

    `options` go to `maskdepth.synth.make_dataset` (size, num_bg, num_fg, per_pair,
    seed, fg_per_bg, workers, ...); the file name spells out the ones that change the data, e.g.
    `synthetic_64px_100bg_100fg_2pp_seed0.zip` (`..._1000bg_4of100fg_...` with fg_per_bg=4), so
    other settings give another file. With
    `cache_dir` (a Drive folder) a newly generated archive is also copied there, and a later
    runtime copies it back instead of generating it again.
    """
    import inspect

    from maskdepth.synth import make_dataset

    defaults = {k: p.default for k, p in inspect.signature(make_dataset).parameters.items()}
    o = {**defaults, **options}
    objects = f"{o['num_fg']}fg" if o.get("fg_per_bg") in (None, o["num_fg"]) else f"{o['fg_per_bg']}of{o['num_fg']}fg"
    name = f"synthetic_{o['size']}px_{o['num_bg']}bg_{objects}_{o['per_pair']}pp_seed{o['seed']}"
    if o.get("image_format", "jpg") != "jpg":
        name += f"_{o['image_format']}"
    path = Path(folder) / f"{name}.zip"
    if path.is_file():
        return path
    cached = Path(cache_dir) / path.name if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return copy_once(cached, path.parent, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = make_dataset(path, progress=progress, **options)
    if progress and hasattr(summary, "format"):
        print(summary.format())
    if cached is not None:
        copy_once(path, cached.parent, progress=progress)
    return path


def resume_message(run_dir: str | os.PathLike[str], epochs: int | None = None) -> str:
    """One line saying where training of `run_dir` starts: fresh, or from its checkpoints/last.pt.

    Reads the checkpoint itself (epoch, position inside the epoch, step), so it tells the truth
    even when the runtime dropped in the middle of an epoch. `epochs` is the run's target.
    """
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return f"{run_dir}: no checkpoints/last.pt yet, training starts at epoch 1"
    from maskdepth.checkpoint import read_checkpoint

    ts = read_checkpoint(last, mmap=True).train
    done, batch, step = ts.epoch, ts.batch_in_epoch, ts.step
    age = _age(time.time() - last.stat().st_mtime)
    head = f"{last} (written {age} ago): {done} epoch{'s' if done != 1 else ''} done"
    if batch:
        head += f" and {batch} batches of epoch {done + 1}"
    if epochs is not None and done >= epochs:
        return f"{head}, step {step}; the run has all {epochs} epochs: raise EPOCHS to train longer"
    where = f"epoch {done + 1}, batch {batch + 1}" if batch else f"epoch {done + 1}"
    return f"{head}, step {step}; training resumes at {where}"


def epochs_done(run_dir: str | os.PathLike[str]) -> int:
    """Epochs completed by the run in `run_dir`, from its checkpoints/last.pt (0 without one):
    `epochs_done(run_dir) >= epochs` tells that training has nothing to do, before any data is
    copied or loaded."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return 0
    from maskdepth.checkpoint import read_checkpoint

    return int(read_checkpoint(last, mmap=True).train.epoch)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def sample_grids(run_dir: str | os.PathLike[str]) -> dict[int, Path]:
    """{epoch: path} of the run's samples/epoch_NNN.png, in epoch order (empty if none yet)."""
    grids = {}
    for path in Path(run_dir, "samples").glob("epoch_*.png"):
        match = re.fullmatch(r"epoch_(\d+)\.png", path.name)
        if match:
            grids[int(match.group(1))] = path
    return dict(sorted(grids.items()))


def metrics_table(metrics_csv: str | os.PathLike[str], columns: Sequence[str] | None = None) -> str:
    """metrics.csv as an aligned text table (for when pandas is not installed).

    `columns` defaults to the main figures (`TABLE_COLUMNS`) that the file has; numbers are
    shown with 4 significant digits.
    """
    path = Path(metrics_csv)
    if not path.is_file():
        raise DataError(f"{path} not found; it is written after the first epoch")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    if columns is None:
        columns = [c for c in TABLE_COLUMNS if c in header] or header
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path} has no column {', '.join(missing)}; it has {', '.join(header)}")
    cells = [list(columns)] + [[_short(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _short(text: str | None) -> str:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return text or ""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def extract_pair(
    dataset: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    split_json: str | os.PathLike[str] | None = None,
    split: str = "test",
    index: int = 0,
) -> tuple[Path, Path]:
    """Write one (bg, fg_bg) pair of a dataset to files; return their paths.

    `dataset` is what `data.path` takes (a zip with a manifest, a manifest CSV, a folder holding
    manifest.csv). The pair is sample `index` among those whose bg_id is in `split` of a run's
    split.json (when given), so the pair was not trained on. Files: `out_dir/bg/<name>` and
    `out_dir/fg_bg/<name>`, `<name>` the fg_bg entry's file name with the bg's extension for the
    bg (so both also pair up as folders for `predict_pairs`).
    """
    from maskdepth.data.manifest import ROLES, load_manifest

    manifest = load_manifest(dataset)
    rows = range(len(manifest))
    if split_json is not None:
        splits = json.loads(Path(split_json).read_text())
        if split not in splits:
            raise DataError(f"{split_json} has no split {split!r}; it has {', '.join(splits)}")
        wanted = set(splits[split])
        rows = [r for r in rows if manifest.bg_ids[manifest.bg_code[r]] in wanted]
    if not rows:
        where = f"rows with a bg_id of the {split!r} split in {split_json}" if split_json is not None else "samples"
        raise DataError(f"{dataset}: the manifest has no {where}")
    row = rows[index % len(rows)]
    fg, bg = ROLES.index("fg_bg"), ROLES.index("bg")
    fg_name = PurePosixPath(manifest.entry_name(fg, row)).name
    bg_name = PurePosixPath(fg_name).stem + PurePosixPath(manifest.entry_name(bg, row)).suffix
    paths = []
    for role, target in ((bg, Path(out_dir) / "bg" / bg_name), (fg, Path(out_dir) / "fg_bg" / fg_name)):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(manifest.read(role, row))
        paths.append(target)
    return paths[0], paths[1]


# --------------------------------------------------------------------------------------------
# display in a notebook


def show_image(path: str | os.PathLike[str]) -> None:
    """Display a PNG/JPEG file in the notebook."""
    from IPython.display import Image, display

    display(Image(filename=str(path)))


def show_grid(run_dir: str | os.PathLike[str], epoch: int | None = None) -> None:
    """Display the sample grid of `epoch` (None: the latest) of the run in `run_dir`."""
    grids = sample_grids(run_dir)
    if not grids:
        raise DataError(f"{Path(run_dir, 'samples')} has no epoch_NNN.png yet; one is written at the end of each epoch")
    epoch = max(grids) if epoch is None else int(epoch)
    if epoch not in grids:
        raise DataError(f"no sample grid for epoch {epoch} in {Path(run_dir, 'samples')}; "
                        f"epochs there: {_epochs(grids)}")
    print(f"epoch {epoch} (grids of epochs {_epochs(grids)})")
    show_image(grids[epoch])


def _epochs(grids: dict[int, Path]) -> str:
    epochs = list(grids)
    contiguous = epochs == list(range(epochs[0], epochs[-1] + 1))
    return f"{epochs[0]}-{epochs[-1]}" if contiguous and len(epochs) > 2 else ", ".join(map(str, epochs))


def pick_grid(run_dir: str | os.PathLike[str], epoch: int | None = None, width: int = 900) -> None:
    """A slider over the run's epochs when ipywidgets is installed (as on Colab) and `epoch` is None;
    otherwise the grid of `epoch` (None: the latest).

    The slider drives an `ipywidgets.Image` holding the grid scaled to `width` px (one epoch's
    grid at a time, re-encoded when the slider moves), not `interact` over full-size PNGs."""
    try:
        import ipywidgets
    except ImportError:
        ipywidgets = None
    if ipywidgets is None or epoch is not None:
        if ipywidgets is None and epoch is None:
            print("(no ipywidgets here: set the epoch number in this cell and run it again to see another epoch)")
        show_grid(run_dir, epoch)
        return
    grids = sample_grids(run_dir)
    if not grids:
        show_grid(run_dir)  # raises the explanation
    from IPython.display import display

    slider = ipywidgets.SelectionSlider(options=list(grids), value=max(grids), description="epoch",
                                        continuous_update=False)
    image = ipywidgets.Image(value=scaled_png(grids[max(grids)], width), format="png")
    slider.observe(lambda change: setattr(image, "value", scaled_png(grids[change["new"]], width)), names="value")
    display(ipywidgets.VBox([slider, image]))


def scaled_png(path: str | os.PathLike[str], width: int = 900) -> bytes:
    """The image file `path` as PNG bytes at most `width` px wide (aspect kept): what a notebook
    needs to show it, a fraction of a full-resolution grid's size."""
    return _png(_scaled(path, width))


def _scaled(path: str | os.PathLike[str], width: int) -> Any:
    """The image file `path` as an RGB PIL image, shrunk to at most `width` px wide."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im = im.convert("RGB")
    if im.width > width:
        im = im.resize((width, max(1, round(im.height * width / im.width))), PILImage.LANCZOS)
    return im


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def show_metrics(metrics_csv: str | os.PathLike[str]) -> None:
    """Display metrics.csv: a pandas table when pandas is installed (as on Colab), else aligned text."""
    try:
        import pandas as pd
    except ImportError:
        print(metrics_table(metrics_csv))
        return
    from IPython.display import display

    if not Path(metrics_csv).is_file():
        raise DataError(f"{metrics_csv} not found; it is written after the first epoch")
    display(pd.read_csv(metrics_csv).set_index("epoch"))


def show_images(paths: Sequence[str | os.PathLike[str]], *, height: float = 2.6) -> None:
    """Display image files side by side, titled by file name (with its folder where two names are
    the same); 16-bit depth PNGs are scaled to [0, 1]."""
    import numpy as np
    from IPython.display import Image, display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image as PILImage

    paths = [Path(p) for p in paths]
    names = [p.name for p in paths]
    titles = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    fig = Figure(figsize=(height * len(paths), height + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, path, title in zip(fig.subplots(1, len(paths), squeeze=False)[0], paths, titles, strict=True):
        with PILImage.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I"):
                pixels = np.asarray(im, dtype=np.float32) / 65535.0
            else:
                pixels = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0,
                  vmax=1 if pixels.dtype != np.uint8 else 255)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    display(Image(data=buffer.getvalue(), format="png"))


# --------------------------------------------------------------------------------------------
# the machine, the data's place in memory, Drive


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes ({} where there is none, e.g. macOS)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def machine_report(local_dir: str | os.PathLike[str], drive_dir: str | os.PathLike[str] | None = None) -> str:
    """Lines describing what training will run on: the GPU (name, memory, the precision `train.amp:
    auto` picks and why) or a loud warning that there is none, the RAM, the free local disk
    under `local_dir`, and the space on `drive_dir` where the mount reports it (Google Drive's
    FUSE mount reports the account's quota)."""
    import shutil

    import torch

    from maskdepth.runtime import amp_dtype

    lines = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        _, why = amp_dtype("auto", torch.device("cuda", 0))
        lines.append(f"GPU: {props.name}, {_gb(props.total_memory)}, compute capability {props.major}.{props.minor}; "
                     f"precision: {why}")
    else:
        lines.append("!" * 88)
        lines.append("WARNING: NO CUDA GPU. Training runs on the CPU: fine for SMOKE_TEST, days for a real run.")
        lines.append("On Colab: Runtime > Change runtime type > GPU (T4 or better), then Run all again.")
        lines.append("!" * 88)
    mem = _meminfo()
    if mem:
        available = mem.get("MemAvailable", mem.get("MemFree", 0))
        lines.append(f"RAM: {_gb(mem.get('MemTotal', 0))}, {_gb(available)} available")
    for label, folder in (("local disk", local_dir), ("Drive", drive_dir)):
        if folder is None:
            continue
        where = next((p for p in (Path(folder), *Path(folder).parents) if p.exists()), None)
        if where is None:
            continue
        usage = shutil.disk_usage(where)
        lines.append(f"{label} ({folder}): {_gb(usage.free)} free of {_gb(usage.total)}")
    return "\n".join(lines)


def choose_in_memory(paths: Sequence[str | os.PathLike[str]], override: bool | None = None,
                     fraction: float = 0.4) -> tuple[bool, str]:
    """Whether to load the archives `paths` into RAM (`data.in_memory: true`) or memory-map them,
    with the reason. In RAM when their total size is at most `fraction` of the available memory
    (the rest is for the model, the DataLoader workers and a second dataset opened later, as the
    notebook's section 2 does); memory-mapped otherwise: the pages then live in the OS page
    cache, which the kernel reclaims instead of running out of memory. `override` (True/False)
    wins, and says so."""
    total = sum(Path(p).stat().st_size for p in paths)
    if override is not None:
        return bool(override), f"data.in_memory={bool(override)} as set ({_gb(total)} of archives)"
    available = _meminfo().get("MemAvailable")
    if available is None:
        return False, f"available RAM unknown: memory-mapping the {_gb(total)} of archives"
    if total <= fraction * available:
        return True, f"{_gb(total)} of archives <= {fraction:g} x {_gb(available)} available RAM: loading into RAM"
    return False, (f"{_gb(total)} of archives > {fraction:g} x {_gb(available)} available RAM: memory-mapping "
                   "(reads from local disk through the page cache)")


def require_mounted(drive_dir: str | os.PathLike[str], mount_point: str = "/content/drive") -> None:
    """Refuse to go on when `drive_dir` is under `mount_point` but nothing is mounted there
    (after `drive.flush_and_unmount()`): writing there would silently train onto the VM's disk,
    which vanishes with the runtime."""
    drive_dir = Path(drive_dir)
    if mount_point and (drive_dir == Path(mount_point) or Path(mount_point) in drive_dir.parents):
        if not os.path.ismount(mount_point):
            raise DataError(f"{mount_point} is not mounted (flush_and_unmount was run?), so {drive_dir} would be "
                            "the VM's own disk and lost with the runtime; run the Google Drive cell again to remount")


# --------------------------------------------------------------------------------------------
# live view while training


class LiveView:
    """`fit(cfg, on_epoch_end=LiveView(run_dir))`: after every epoch, one display slot of the
    notebook shows a one-line summary, that epoch's sample grid and the curves, replacing the
    previous epoch's (one `IPython.display` handle, updated in place).

    The picture is a composite PNG scaled to `width` pixels, so a long run does not push
    megabytes of full-size PNGs through the notebook each epoch."""

    def __init__(self, run_dir: str | os.PathLike[str], width: int = 900) -> None:
        self.run_dir, self.width = Path(run_dir), int(width)
        self.handle: Any = None

    def picture(self, epoch: int) -> bytes:
        """PNG bytes: the grid of `epoch` above the curves, each at most `self.width` px wide."""
        from PIL import Image as PILImage

        paths = (self.run_dir / "samples" / f"epoch_{epoch:03d}.png", self.run_dir / "curves.png")
        parts = [_scaled(path, self.width) for path in paths if path.is_file()]
        width = max((p.width for p in parts), default=1)
        canvas = PILImage.new("RGB", (width, sum(p.height for p in parts) or 1), "white")
        y = 0
        for part in parts:
            canvas.paste(part, (0, y))
            y += part.height
        return _png(canvas)

    def summary(self, row: dict[str, Any]) -> str:
        """One line: run, epoch and the epoch's figures (NaN where a metric is absent)."""
        get = lambda key: float(row.get(key, math.nan))  # noqa: E731
        return (f"{self.run_dir.name}  epoch {row['epoch']}  train loss {get('train_loss'):.4f}  "
                f"val IoU {get('val_iou'):.3f}  δ1 {get('val_delta1'):.3f}  RMSE {get('val_rmse'):.4f}  "
                f"{get('seconds'):.0f}s")

    def __call__(self, row: dict[str, Any], model: Any = None) -> None:
        import base64

        from IPython.display import display

        line, png = self.summary(row), self.picture(int(row["epoch"]))
        data = base64.b64encode(png).decode()
        html = (f"<div style='font-family:monospace'>{line}</div>"
                f"<img src='data:image/png;base64,{data}' style='max-width:100%'/>")
        bundle = {"text/html": html, "image/png": data, "text/plain": line}
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)
