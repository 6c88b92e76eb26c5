"""maskdepth export: ONNX and TorchScript files that give what the PyTorch model gives.

    pytest tests/test_export.py
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from maskdepth.checkpoint import save_checkpoint
from maskdepth.cli import main
from maskdepth.config import config_to_dict, load_config
from maskdepth.data import open_dataset
from maskdepth.errors import ConfigError
from maskdepth.export import export_checkpoint
from maskdepth.inference import load_model
from maskdepth.model import build_model

from conftest import QUICK


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(QUICK, [f"data.path={tiny_data}", "data.size=32", "model.base_channels=8", "device=cpu"])
    torch.manual_seed(0)
    model = build_model("maskdepth", base_channels=8)
    model.set_normalization([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])  # not the defaults: must travel into the graph
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    history = [{"epoch": 1, "val_iou": 0.5, "val_rmse": 0.2},
               {"epoch": 2, "val_iou": 0.625, "val_rmse": 0.125, "lr": 0.1}]
    state = {"version": "test", "config": config_to_dict(cfg), "model": model.state_dict(), "epoch": 2, "step": 14,
             "batch_in_epoch": 0, "history": history}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", state)


def _inputs(tiny_data: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random inputs and real ones (validation samples of the tiny archive), at 32 and 48 px,
    batch 1 and 3."""
    generator = torch.Generator().manual_seed(1)
    cases = [(torch.rand(1, 3, 48, 48, generator=generator), torch.rand(1, 3, 48, 48, generator=generator)),
             (torch.rand(3, 3, 32, 48, generator=generator), torch.rand(3, 3, 32, 48, generator=generator))]
    for size, count in ((32, 3), (48, 1)):
        data = open_dataset(tiny_data, size, "val")
        samples = [data[i] for i in range(count)]
        bg = torch.stack([torch.as_tensor(s["bg"]).float() for s in samples])
        fg_bg = torch.stack([torch.as_tensor(s["fg_bg"]).float() for s in samples])
        scale = 255.0 if bg.max() > 1.5 else 1.0  # uint8 samples: to [0, 1] as the model takes them
        cases.append((bg / scale, fg_bg / scale))
    return cases


def _reference(checkpoint: Path, bg: torch.Tensor, fg_bg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    model, _ = load_model(checkpoint)
    with torch.no_grad():
        logits, depth = model(bg, fg_bg)
    return torch.sigmoid(logits).numpy(), depth.numpy()


def test_onnx_and_torchscript_match_pytorch(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    onnx_file, sidecar = export_checkpoint(checkpoint, tmp_path / "m.onnx", fmt="onnx")
    ts_file, _ = export_checkpoint(checkpoint, tmp_path / "m.ts.pt", fmt="torchscript")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(ts_file))
    assert [i.name for i in session.get_inputs()] == ["bg", "fg_bg"]
    assert [o.name for o in session.get_outputs()] == ["mask", "depth"]
    cases = _inputs(tiny_data)
    assert {tuple(bg.shape) for bg, _ in cases} >= {(1, 3, 48, 48), (3, 3, 32, 32), (3, 3, 32, 48)}
    for bg, fg_bg in cases:
        mask, depth = _reference(checkpoint, bg, fg_bg)
        assert mask.min() >= 0 and mask.max() <= 1 and 0.01 < mask.std()  # probabilities, not constant
        onnx_mask, onnx_depth = session.run(None, {"bg": bg.numpy(), "fg_bg": fg_bg.numpy()})
        with torch.no_grad():
            ts_mask, ts_depth = (t.numpy() for t in scripted(bg, fg_bg))
        for got, want in ((onnx_mask, mask), (onnx_depth, depth), (ts_mask, mask), (ts_depth, depth)):
            assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4

    meta = json.loads(sidecar.read_text())
    assert meta["format"] == "onnx" and meta["stride"] == 16 and meta["trained_size"] == 32
    assert meta["input_size_rule"] == "B >= 1; H and W positive multiples of 16"
    assert meta["epoch"] == 2 and meta["step"] == 14 and meta["val_metrics"] == {"iou": 0.625, "rmse": 0.125}
    assert meta["input_mean"] == pytest.approx([0.4, 0.5, 0.6]) and "larger = farther" in meta["outputs"]["depth"]
    assert meta["maskdepth_version"] and meta["torch_version"] == torch.__version__


def test_export_errors_are_one_line(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="height 36 -> use 32 or 48"):
        export_checkpoint(checkpoint, tmp_path / "m.onnx", size=36)
    assert not list(tmp_path.iterdir())  # nothing half-written
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["export", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a maskdepth checkpoint" in err
    real_find_spec = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as mp:  # a machine without the onnx package: how to get it, in one line
        mp.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real_find_spec(name, *a))
        assert main(["export", str(checkpoint), "--out", str(tmp_path / "y.onnx"), "--exporter", "legacy"]) == 2
    assert "ONNX export needs onnx: pip install onnx" in capsys.readouterr().err and not (tmp_path / "y.onnx").exists()
    assert main(["export", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path / "cli.ts.pt")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "cli.ts.pt"), str(tmp_path / "cli.ts.pt.json")]
    assert json.loads((tmp_path / "cli.ts.pt.json").read_text())["format"] == "torchscript"


@pytest.mark.slow
def test_the_dynamo_exporter_gives_the_same_graph(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        with pytest.raises(ConfigError, match="needs torch >= 2.5"):
            export_checkpoint(checkpoint, tmp_path / "d.onnx", exporter="dynamo")
        return
    onnx_file, sidecar = export_checkpoint(checkpoint, tmp_path / "d.onnx", exporter="dynamo")
    assert "dynamo" in json.loads(sidecar.read_text())["exported_by"]
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 32, 32), (3, 3, 48, 64)):
        bg, fg_bg = torch.rand(shape), torch.rand(shape)
        outputs = session.run(None, {"bg": bg.numpy(), "fg_bg": fg_bg.numpy()})
        for got, want in zip(outputs, _reference(checkpoint, bg, fg_bg), strict=True):
            assert np.abs(got - want).max() <= 1e-4


def test_export_refuses_an_out_that_is_its_checkpoint(checkpoint: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24: `export X.pt --out X.pt` replaced the checkpoint with the export, exit 0."""
    link = tmp_path / "link.pt"
    link.symlink_to(checkpoint)
    before = checkpoint.read_bytes()
    for out in (checkpoint, link):
        assert main(["export", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"maskdepth: error: --out {out} is the input checkpoint {checkpoint}; writing it would destroy" in err
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_files_follow_the_umask(fmt: str, umask: int, checkpoint: Path, tmp_path: Path) -> None:
    """Issue 24: written files follow the umask (0644 under 022, 0664 under 002), the file and its sidecar."""
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        pytest.skip("onnx is not installed")
    for path in export_checkpoint(checkpoint, tmp_path / f"m.{fmt}", fmt=fmt):
        assert path.stat().st_mode & 0o777 == umask, (path.name, oct(path.stat().st_mode))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt, name", [("torchscript", "m.ts.pt"), ("onnx", "m.onnx")])
def test_a_full_disk_is_one_line_naming_the_export_and_leaves_no_temp_file(
        fmt: str, name: str, checkpoint: Path, tmp_path: Path, full_disk, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24: TorchScript export to a full disk aborted in C++ (exit 134) and left its temp file
    filling the disk; ONNX said "no space left on device" without the file. Both are written from
    memory through the atomic writer now: one line naming the file, no temp file, exit 2."""
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        pytest.skip("onnx is not installed")
    out = tmp_path / "out" / name
    out.parent.mkdir()
    stale = out.with_name(f".{name}.tmp")  # what an export that aborted in C++ left behind
    stale.write_bytes(b"x" * 1000)
    full_disk(name)
    assert main(["export", str(checkpoint), "--format", fmt, "--out", str(out), "--exporter", "legacy"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("maskdepth: ")]
    assert lines == [f"maskdepth: error: no space left on device writing {out} (nothing was written)"], err
    assert "Traceback" not in err and list(out.parent.iterdir()) == []


def test_a_writer_that_takes_a_file_name_is_guarded_too(tmp_path: Path) -> None:
    """The dynamo exporter saves to a file name (`atomic_path`): a full disk there is the same one
    line naming the file, the temp file removed, and the previous file kept."""
    import errno

    from maskdepth.errors import DiskFullError
    from maskdepth.fileio import atomic_path

    out = tmp_path / "d.onnx"
    out.write_bytes(b"previous")

    def save(name: Path) -> None:
        Path(name).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(name))

    with pytest.raises(DiskFullError) as err, atomic_path(out) as tmp:
        save(tmp)
    assert str(err.value) == f"no space left on device writing {out} (the previous d.onnx is kept)"
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["d.onnx"]
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["d.onnx"]
