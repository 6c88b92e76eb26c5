"""TensorBoard logging of a run, optional (`log.tensorboard: true`): RUN/tb/.

    with tensorboard_log(run_dir / "tb", enabled=cfg.log.tensorboard, resume_step=ts.step) as tb:
        tb.step(step, {"loss": ..., "mask_loss": ..., "depth_loss": ..., "lr": ...})  # every log.every steps
        tb.epoch(row, grid_png)                                                    # per-epoch metrics + the grid

(`tb` is None when not enabled; `TensorBoardLog(folder, resume_step)` + `close()` without the block.)

Tags: `train/loss`, `train/mask_loss`, `train/depth_loss`, `train/lr` against the optimiser step;
`epoch/<metrics.csv column>` (val_iou, val_rmse, ... and the epoch's mean training losses) and
the image `samples` against the step at which the epoch ended. metrics.csv and curves.png stay
the run's primary record; this mirrors them for people who already live in TensorBoard.

A resumed run appends to the same folder. Its writer starts with `purge_step = resume step + 1`:
TensorBoard then drops whatever the interrupted process had logged after the checkpoint it
resumes from (steps that are trained again), so no step appears twice. Needs the `tensorboard`
package (`pip install tensorboard`), imported only when the option is on.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

from maskdepth.errors import ConfigError


class TensorBoardLog:
    """A SummaryWriter on `folder` that continues a run resumed at optimiser step `resume_step`."""

    def __init__(self, folder: str | os.PathLike[str], resume_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log.tensorboard=true needs the tensorboard package: pip install tensorboard "
                              "(or set log.tensorboard=false)") from None
        self.writer = SummaryWriter(os.fspath(folder), purge_step=int(resume_step) + 1)

    def step(self, step: int, values: dict[str, float]) -> None:
        """Scalars `train/<name>` at optimiser step `step`."""
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", float(value), step)

    def epoch(self, row: dict[str, Any], grid_png: str | os.PathLike[str] | None = None) -> None:
        """An epoch's metrics.csv row as `epoch/<column>` at the step it ended (`row["steps"]`), and
        its sample grid as the image `samples`."""
        step = int(row["steps"])
        for key, value in row.items():
            if key not in ("epoch", "steps") and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", float(value), step)
        if grid_png is not None and os.path.isfile(grid_png):
            import numpy as np
            from PIL import Image

            with Image.open(grid_png) as im:
                self.writer.add_image("samples", np.asarray(im.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def tensorboard_log(folder: str | os.PathLike[str], *, enabled: bool,
                    resume_step: int = 0) -> Iterator[TensorBoardLog | None]:
    """A TensorBoardLog on `folder` continuing at `resume_step`, closed at the end of the block; None
    when not `enabled` (log.tensorboard off, or a rank other than 0), so the loop needs one `if tb`."""
    if not enabled:
        yield None
        return
    tb = TensorBoardLog(folder, resume_step=resume_step)
    try:
        yield tb
    finally:
        tb.close()


__all__ = ["TensorBoardLog", "tensorboard_log"]
