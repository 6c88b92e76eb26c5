"""A trained checkpoint as a deployable file: ONNX or TorchScript, with a JSON sidecar.

    maskdepth export runs/full192/checkpoints/best.pt --format onnx --out maskdepth.onnx
    export_checkpoint("best.pt", "maskdepth.pt", fmt="torchscript")

Both files take the same inputs as the PyTorch model and give probabilities, not logits:

    inputs   bg, fg_bg   float32 [B,3,H,W] RGB in [0, 1]; B, H and W dynamic, H and W positive
                         multiples of the network's stride (16 for MaskDepthNet's defaults)
    outputs  mask        float32 [B,1,H,W] foreground probability in [0, 1]
             depth       float32 [B,1,H,W] depth in [0, 1], larger = farther (the training depth
                         images' 8-bit values / 255)

The input normalisation is part of the graph (the model's `input_mean` / `input_std` buffers),
so a runtime feeds raw RGB scaled to [0, 1]. The sidecar `FILE.json` records this contract, the
stride, the size the network was trained at, the checkpoint's epoch, step and validation metrics,
and the maskdepth and torch versions.

How: TorchScript by `torch.jit.trace`; ONNX by torch's TorchScript-based exporter
(`torch.onnx.export(..., dynamo=False)`, opset 17; it needs the `onnx` package), with dynamic batch,
height and width axes. Where a future torch has dropped that exporter, the dynamo exporter
(`dynamo=True`, which needs the `onnxscript` package) is used instead with the same dynamic
axes; `exporter=` forces one. The network has no data-dependent control flow, so one trace at
one size serves every size (the parity tests check two sizes and two batch sizes against PyTorch).

No `--fp16`: TensorRT (`trtexec --fp16`) and onnxruntime's CUDA/TensorRT providers pick half
precision kernels from the fp32 graph themselves, which keeps the exported file exact and one
file for every device; a half-precision graph built here could not be checked on this project's
CPU-only test machines.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from maskdepth import __version__
from maskdepth.errors import ConfigError, MaskDepthError
from maskdepth.fileio import atomic_path, refuse_overwrite, write_atomic

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("auto", "legacy", "dynamo")
OPSET = 17


class Probabilities(nn.Module):
    """`model` with a sigmoid on the mask: (bg, fg_bg) -> (mask probability, depth)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        logits, depth = self.model(bg, fg_bg)
        return torch.sigmoid(logits), depth


def _legacy_onnx_available() -> bool:
    """Whether this torch still has the TorchScript-based ONNX exporter (`dynamo=False`)."""
    params = inspect.signature(torch.onnx.export).parameters
    return "dynamo" not in params or params["dynamo"].default is not inspect.Parameter.empty


def _export_onnx(module: nn.Module, example: tuple[Tensor, Tensor], out: Path, exporter: str, stride: int) -> str:
    """Write `module` as ONNX to `out`, atomically; returns the exporter used ('legacy' or 'dynamo').
    The legacy exporter writes into memory first, the dynamo one into a temp file beside `out`
    (`atomic_path`); either way a full disk is one line naming `out`, and no temp file stays."""
    names = dict(input_names=["bg", "fg_bg"], output_names=["mask", "depth"])
    if exporter == "auto":
        exporter = "legacy" if _legacy_onnx_available() else "dynamo"
    if exporter == "dynamo" and "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ConfigError(f"the dynamo ONNX exporter needs torch >= 2.5 (this is {torch.__version__}); "
                          "use --exporter legacy")
    needed = ("onnx", "onnxscript") if exporter == "dynamo" else ("onnx",)
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise MaskDepthError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                             "(or pip install 'maskdepth[export]')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; parity is tested instead
        if exporter == "legacy":
            has_switch = "dynamo" in inspect.signature(torch.onnx.export).parameters
            kwargs: dict[str, Any] = {"dynamo": False} if has_switch else {}
            axes = {0: "batch", 2: "height", 3: "width"}
            buffer = io.BytesIO()
            torch.onnx.export(module, example, buffer, opset_version=OPSET, do_constant_folding=True,
                              dynamic_axes={n: axes for n in ("bg", "fg_bg", "mask", "depth")}, **names, **kwargs)
            write_atomic(out, buffer.getvalue())
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            height = torch.export.Dim("h", min=1, max=4096 // stride)
            width = torch.export.Dim("w", min=1, max=4096 // stride)
            shape = {0: batch, 2: stride * height, 3: stride * width}
            program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes={"bg": shape, "fg_bg": shape},
                                        **names)
            with atomic_path(out) as tmp:
                program.save(str(tmp))
    return exporter


def _metrics(history: list[dict[str, Any]], epoch: int) -> dict[str, float]:
    """The validation metrics of `epoch` (1-based) in a checkpoint's history."""
    row = next((r for r in history if int(r.get("epoch", -1)) == epoch), {})
    return {k[4:]: float(v) for k, v in row.items() if k.startswith("val_") and isinstance(v, (int, float))}


def export_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, fmt: str = "onnx",
                      size: int | None = None, exporter: str = "auto") -> tuple[Path, Path]:
    """Export `checkpoint` to `out` in format `fmt` ("onnx" | "torchscript"); returns (file, sidecar).

    `size` (default: the size it was trained at) is the side of the example input that is
    traced; it must be a positive multiple of the stride, otherwise a ConfigError (one line).
    The file is written to a temp file and renamed, so an interrupted export leaves no half file,
    and a full disk is one DiskFullError naming it, with no temp file left behind.
    """
    from maskdepth.checkpoint import read_checkpoint, resolve_checkpoint
    from maskdepth.inference import load_model

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    checkpoint = resolve_checkpoint(checkpoint)  # a run directory: its best.pt (else last.pt)
    refuse_overwrite(out, {"checkpoint": checkpoint})
    refuse_overwrite(Path(out).with_name(Path(out).name + ".json"), {"checkpoint": checkpoint}, "the sidecar of --out")
    model, cfg = load_model(checkpoint, "cpu")
    ck = read_checkpoint(checkpoint, mmap=True)
    stride = int(getattr(model, "stride", 1))
    size = int(size or cfg.data.size)
    example = (torch.rand(1, 3, size, size), torch.rand(1, 3, size, size))
    model.check_inputs(*example)  # a size that is not a multiple of the stride: one line
    module = Probabilities(model).eval()
    out = Path(out)
    out.with_name(f".{out.name}.tmp").unlink(missing_ok=True)  # what an export that aborted in C++ once left
    if fmt == "torchscript":  # into memory first: torch.jit.save's C++ writer aborts the process on a full disk
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(module, example), buffer)
        write_atomic(out, buffer.getvalue())
        how = "torch.jit.trace"
    else:
        how = "torch.onnx.export (" + _export_onnx(module, example, out, exporter, stride) + f", opset {OPSET})"
    sidecar = out.with_name(out.name + ".json")
    write_atomic(sidecar, json.dumps({
        "format": fmt, "exported_by": how, "checkpoint": str(checkpoint),
        "epoch": ck.train.epoch, "step": ck.train.step,
        "val_metrics": _metrics(ck.train.history, ck.train.epoch), "model": cfg.model.name,
        "inputs": {"bg": "float32 [B,3,H,W] RGB in [0, 1]", "fg_bg": "float32 [B,3,H,W] RGB in [0, 1]"},
        "outputs": {"mask": "float32 [B,1,H,W] foreground probability in [0, 1]",
                    "depth": "float32 [B,1,H,W] depth in [0, 1], larger = farther (8-bit depth image / 255)"},
        "input_size_rule": f"B >= 1; H and W positive multiples of {stride}", "stride": stride,
        "trained_size": cfg.data.size, "normalisation": "inside the graph: (x - mean) / std per channel",
        "input_mean": [float(v) for v in model.input_mean], "input_std": [float(v) for v in model.input_std],
        "maskdepth_version": __version__, "torch_version": torch.__version__,
    }, indent=2) + "\n")
    return out, sidecar


__all__ = ["EXPORTERS", "FORMATS", "Probabilities", "export_checkpoint"]
