"""The Colab notebook: committed clean, runs end to end headlessly with SMOKE_TEST, and its helpers.

    pytest tests/test_notebook.py

`test_notebook_runs_end_to_end` executes notebooks/train_colab.ipynb in a Jupyter kernel of this
interpreter (nbclient), with the parameters injected the way papermill does it (a cell after the
`parameters` cell) so that Drive and local disk are folders in tmp_path. It fails on any cell
error, and checks that the sample grids and curves were displayed and the run directories written.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from maskdepth import colab
from maskdepth.errors import DataError

from data_helpers import s15_folder

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "train_colab.ipynb"
KERNEL = "maskdepth-test"


def _cells_tagged(nb: nbformat.NotebookNode, tag: str) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, c) for i, c in enumerate(nb.cells) if tag in c.get("metadata", {}).get("tags", [])]


def _the_cell(nb: nbformat.NotebookNode, tag: str) -> tuple[int, nbformat.NotebookNode]:
    cells = _cells_tagged(nb, tag)
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"])
    return "".join(parts)


def _has_png(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


# --------------------------------------------------------------------------------------------
# the committed notebook


def test_committed_notebook_is_clean_and_has_badge_and_parameters() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"outputs left in: {cell.source[:60]!r}"

    _, params = _the_cell(nb, "parameters")
    assert re.search(r"^SMOKE_TEST = False\b", params.source, re.M)
    for name in ("DRIVE_DIR", "DATASET", "IN_MEMORY", "CONFIG", "IMAGE_SIZE", "EPOCHS", "BATCH_SIZE", "RUN_NAME"):
        assert re.search(rf"^{name} = .*#@param", params.source, re.M), (
            f"parameter {name} missing (or not a form field)"
        )
    assert params.source.startswith("#@title")
    repo = re.search(r'^GITHUB_REPO = "([^"]+)"', params.source, re.M).group(1)

    # The badge is the first thing, and points at the same org/repo that the setup cell clones.
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{repo}/blob/main/notebooks/train_colab.ipynb)")
    assert badge in first.source
    assert "importlib.util.find_spec(\"google.colab\")" in "".join(c.source for c in nb.cells)
    assert "flush_and_unmount()" in "".join(c.source for c in nb.cells)


# --------------------------------------------------------------------------------------------
# executing it


def _kernel_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernelspec that starts this very interpreter, found first through JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "maskdepth test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def _parameters_cell(drive: Path, local: Path, **values: object) -> nbformat.NotebookNode:
    """The cell papermill would inject after the `parameters` cell."""
    values = {"SMOKE_TEST": True, "DRIVE_DIR": str(drive), "LOCAL_DIR": str(local), "DATASET": "", **values}
    return nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()),
                                     metadata={"tags": ["injected-parameters"]})


def _run(nb: nbformat.NotebookNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, upto: str | None = None,
         then: Callable[[NotebookClient], None] | None = None) -> float:
    """Execute the cells of `nb` (all, or up to and including the one tagged `upto`), then `then(client)`
    in the same kernel; returns the seconds taken. Any cell error raises."""
    _kernel_spec(tmp_path, monkeypatch)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=300,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    started = time.monotonic()
    last = _the_cell(nb, upto)[0] if upto else len(nb.cells) - 1
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells[: last + 1]):
            client.execute_cell(cell, i)  # raises CellExecutionError on any cell error
        if then is not None:
            then(client)
    return time.monotonic() - started


def _has_widget(cell: nbformat.NotebookNode) -> bool:
    return any("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The synthetic path, all cells; then the training cell again (it resumes), then the parameters
    cell again with another RUN_NAME, and training trains that run."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    drive, local = tmp_path / "drive", tmp_path / "local"
    index, _ = _the_cell(nb, "parameters")
    nb.cells[index + 1 : index + 1] = [_parameters_cell(drive, local)]
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    train_index, train_cell = _the_cell(nb, "train")
    texts: dict[str, str] = {}

    def reruns(client: NotebookClient) -> None:
        texts["first"] = _text(train_cell)
        client.execute_cell(train_cell, train_index)  # as after a disconnect: continues from last.pt
        texts["again"] = _text(train_cell)
        renamed = _parameters_cell(drive, local, RUN_NAME="other")
        client.execute_cell(renamed, index + 2)  # the parameters rerun with a new RUN_NAME ...
        client.execute_cell(train_cell, train_index)  # ... and training trains the new run
        texts["other"] = _text(train_cell)

    print(f"notebook executed in {_run(nb, tmp_path, monkeypatch, then=reruns):.0f} s")

    assert _text(nb.cells[0]).strip() == sys.executable
    assert "training starts at epoch 1" in texts["first"]
    # The live view: one display slot, updated in place, showing the last epoch's summary and picture.
    assert "smoke_quick64  epoch 2  train loss" in texts["first"] and "val IoU" in texts["first"]
    assert _has_png(train_cell)
    assert "2 epochs done" in texts["again"] and "all 2 epochs" in texts["again"], texts["again"]
    assert "smoke_other" in texts["other"] and "training starts at epoch 1" in texts["other"]
    assert (drive / "runs" / "smoke_other" / "checkpoints" / "last.pt").is_file()
    assert not list((drive / "runs").glob("smoke_smoke_*"))
    assert "WARNING: NO CUDA GPU" in _text(_the_cell(nb, "machine")[1])

    for tag in ["latest-grid", "curves", "predict", "final-latest-grid", "final-curves", "final-evaluate", "report",
                "compare"]:
        assert _has_png(_the_cell(nb, tag)[1]), f"cell {tag!r} displayed no image"
    for tag in ("pick-grid", "final-pick-grid"):  # a slider over display-size grids (ipywidgets is a dev extra)
        assert _has_widget(_the_cell(nb, tag)[1]), f"cell {tag!r} displayed no widget"
    assert "epoch 2" in _text(_the_cell(nb, "latest-grid")[1])
    assert "iou" in _text(_the_cell(nb, "evaluate")[1]).lower()

    for name, epochs in (("smoke_quick64", 2), ("smoke_full192", 1)):
        run = drive / "runs" / name
        for rel in ("config.yaml", "split.json", "metrics.csv", "curves.png", "checkpoints/last.pt",
                    "checkpoints/best.pt", "test_metrics.json",
                    *(f"samples/epoch_{e:03d}.png" for e in range(1, epochs + 1))):
            assert (run / rel).is_file(), f"{run / rel} missing"
        with open(run / "metrics.csv", newline="") as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, epochs + 1))
        assert any(p.name.endswith("_mask.png") for p in (run / "predictions").iterdir())
    # INIT_192_FROM_64 (on by default): the 192 px run started from section 1's best weights
    init = yaml.safe_load((drive / "runs" / "smoke_full192" / "config.yaml").read_text())["train"]["init_from"]
    assert Path(init) == drive / "runs" / "smoke_quick64" / "checkpoints" / "best.pt"
    # Both synthetic datasets were generated on "local disk" and cached on "Drive".
    assert len(list(local.glob("synthetic_*.zip"))) == 2
    on_drive = sorted(p.name for p in (drive / "data").glob("*.zip"))
    assert on_drive == sorted(p.name for p in local.glob("synthetic_*.zip"))


@pytest.mark.slow
def test_notebook_trains_on_a_folder_of_the_four_original_zips(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-p SMOKE_TEST True -p DATASET <folder>` with S15-layout zips (no manifest): section 1 trains
    on them, evaluates and predicts."""
    folder = s15_folder(tiny_data, tmp_path / "drive_data" / "s15")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    drive, local = tmp_path / "drive", tmp_path / "local"
    index, _ = _the_cell(nb, "parameters")
    nb.cells[index + 1 : index + 1] = [_parameters_cell(drive, local, DATASET=str(folder))]
    seconds = _run(nb, tmp_path, monkeypatch, upto="evaluate")
    print(f"section 1 executed in {seconds:.0f} s")

    copies = local / "s15"
    assert sorted(p.name for p in copies.glob("*.zip")) == sorted(p.name for p in folder.iterdir())
    with open(copies / "manifest.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 60  # every sample of tiny_data paired
    train_text = _text(_the_cell(nb, "train")[1])
    assert "paired 60" in train_text or "60 samples" in train_text, train_text
    run = drive / "runs" / "smoke_quick64"
    assert json.loads((run / "test_metrics.json").read_text())["count"] > 0
    assert any(p.name.endswith("_mask.png") for p in (run / "predictions").iterdir())


# --------------------------------------------------------------------------------------------
# maskdepth.colab helpers


def test_copy_once_copies_then_reuses_the_copy(tmp_path: Path) -> None:
    src = tmp_path / "drive" / "data.zip"
    src.parent.mkdir()
    src.write_bytes(b"x" * 1000)
    dst = colab.copy_once(src, tmp_path / "local", progress=False)
    assert dst == tmp_path / "local" / "data.zip" and dst.read_bytes() == b"x" * 1000
    os.utime(dst, (1, 1))
    assert colab.copy_once(src, tmp_path / "local", progress=False) == dst
    assert dst.stat().st_mtime == 1  # same size: not copied again
    src.write_bytes(b"y" * 10)  # a different file: copied again
    assert colab.copy_once(src, tmp_path / "local", progress=False).read_bytes() == b"y" * 10
    assert not list((tmp_path / "local").glob("*.partial"))
    with pytest.raises(DataError, match="missing.zip not found"):
        colab.copy_once(tmp_path / "missing.zip", tmp_path / "local", progress=False)


def _archive(path: Path) -> Path:
    rows = [("fg_bg/bg001_fg001_0.jpg", "bg/bg001.jpg", "bg001"), ("fg_bg/bg002_fg001_0.jpg", "bg/bg002.jpg", "bg002"),
            ("fg_bg/bg002_fg002_1.jpg", "bg/bg002.jpg", "bg002")]
    with zipfile.ZipFile(path, "w") as zf:
        lines = ["fg_bg,bg,mask,depth,bg_id,fg_id"]
        for fg_bg, bg, bg_id in rows:
            lines.append(f"{fg_bg},{bg},mask/x.png,depth/x.jpg,{bg_id},fg001")
            zf.writestr(fg_bg, f"composite {fg_bg}")
        zf.writestr("bg/bg001.jpg", "background 1")
        zf.writestr("bg/bg002.jpg", "background 2")
        zf.writestr("manifest.csv", "\n".join(lines) + "\n")
    return path


def test_extract_pair_takes_a_pair_of_the_requested_split(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "d.zip")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["bg001"], "val": [], "test": ["bg002"]}))
    bg, fg_bg = colab.extract_pair(archive, tmp_path / "pair", split_json=split, split="test", index=1)
    assert fg_bg == tmp_path / "pair" / "fg_bg" / "bg002_fg002_1.jpg"
    assert bg == tmp_path / "pair" / "bg" / "bg002_fg002_1.jpg"
    assert fg_bg.read_text() == "composite fg_bg/bg002_fg002_1.jpg" and bg.read_text() == "background 2"
    bg, fg_bg = colab.extract_pair(archive, tmp_path / "pair0")  # no split: the first row
    assert bg.read_text() == "background 1"
    with pytest.raises(DataError, match="no rows with a bg_id of the 'val' split"):
        colab.extract_pair(archive, tmp_path / "p", split_json=split, split="val")
    with pytest.raises(DataError, match="no split 'holdout'"):
        colab.extract_pair(archive, tmp_path / "p", split_json=split, split="holdout")
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("bg/a.jpg", "")
    with pytest.raises(DataError, match="no manifest.csv in the archive"):
        colab.extract_pair(bare, tmp_path / "p")


def test_metrics_table_and_sample_grids(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_loss,val_loss,val_iou,extra,lr,seconds\n"
        "1,1.23456,1.5,0.5,7,0.002,12.5\n"
        "2,0.9,1.25,0.625,8,1e-05,11\n"
    )
    assert colab.metrics_table(tmp_path / "metrics.csv") == (
        "epoch  train_loss  val_loss  val_iou     lr  seconds\n"
        "    1       1.235       1.5      0.5  0.002     12.5\n"
        "    2         0.9      1.25    0.625  1e-05       11"
    )
    table = colab.metrics_table(tmp_path / "metrics.csv", ["epoch", "extra"])
    assert table == "epoch  extra\n    1      7\n    2      8"
    with pytest.raises(DataError, match="no column val_rmse"):
        colab.metrics_table(tmp_path / "metrics.csv", ["val_rmse"])

    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("epoch_010.png", "epoch_002.png", "epoch_x.png", "notes.txt"):
        (samples / name).write_bytes(b"")
    assert colab.sample_grids(tmp_path) == {2: samples / "epoch_002.png", 10: samples / "epoch_010.png"}
    assert colab.sample_grids(tmp_path / "nothing") == {}
    with pytest.raises(DataError, match="no sample grid for epoch 3"):
        colab.show_grid(tmp_path, 3)


def test_resume_message_reads_the_checkpoint(tmp_path: Path) -> None:
    from maskdepth.checkpoint import save_checkpoint

    assert colab.resume_message(tmp_path / "run") == (
        f"{tmp_path / 'run'}: no checkpoints/last.pt yet, training starts at epoch 1"
    )
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(last, {"model": {}, "config": {}, "epoch": 2, "batch_in_epoch": 5, "step": 17})
    message = colab.resume_message(tmp_path / "run", epochs=4)
    assert message.endswith("2 epochs done and 5 batches of epoch 3, step 17; training resumes at epoch 3, batch 6")
    save_checkpoint(last, {"model": {}, "config": {}, "epoch": 4, "batch_in_epoch": 0, "step": 40})
    assert colab.resume_message(tmp_path / "run", epochs=4).endswith(
        "4 epochs done, step 40; the run has all 4 epochs: raise EPOCHS to train longer")
    assert colab.resume_message(tmp_path / "run", epochs=6).endswith("training resumes at epoch 5")


def test_pick_grid_offers_a_slider_over_display_size_grids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io as _io

    import ipywidgets
    from PIL import Image

    samples = tmp_path / "samples"
    samples.mkdir()
    for epoch, colour in ((1, "red"), (2, "green"), (4, "blue")):
        Image.new("RGB", (2000, 400), colour).save(samples / f"epoch_{epoch:03d}.png")
    displayed: list[object] = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: displayed.extend(objs))
    shown: list[Path] = []
    monkeypatch.setattr(colab, "show_image", lambda path: shown.append(Path(path)))

    colab.pick_grid(tmp_path, width=500)
    (box,) = displayed
    slider, image = box.children
    assert isinstance(slider, ipywidgets.SelectionSlider) and list(slider.options) == [1, 2, 4] and slider.value == 4

    def pixels(widget: ipywidgets.Image) -> tuple[tuple[int, int], tuple[int, int, int]]:
        with Image.open(_io.BytesIO(widget.value)) as im:
            return im.size, im.convert("RGB").getpixel((10, 10))

    assert pixels(image) == ((500, 100), (0, 0, 255))  # the latest grid, shrunk to the display width
    slider.value = 1  # moving the slider swaps the picture
    assert pixels(image) == ((500, 100), (255, 0, 0))
    assert shown == []  # no full-size PNG went to the notebook
    colab.pick_grid(tmp_path, 2)  # an epoch given: that grid, no slider
    assert shown[-1] == samples / "epoch_002.png"

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed: the latest grid
    colab.pick_grid(tmp_path)
    assert shown[-1] == samples / "epoch_004.png" and len(shown) == 2


def test_machine_report_without_cuda_says_so_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(colab, "_meminfo", lambda: {"MemTotal": 12_700_000_000, "MemAvailable": 11_000_000_000})
    report = colab.machine_report(tmp_path / "data" / "not_yet", tmp_path)
    assert "WARNING: NO CUDA GPU" in report and "Change runtime type" in report
    assert "RAM: 12.7 GB, 11.0 GB available" in report
    assert f"local disk ({tmp_path / 'data' / 'not_yet'}): " in report and f"Drive ({tmp_path}): " in report


def test_choose_in_memory_from_the_available_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "d.zip"
    archive.write_bytes(b"x" * 1000)
    monkeypatch.setattr(colab, "_meminfo", lambda: {"MemAvailable": 2500})
    assert colab.choose_in_memory([archive]) == (
        True, "0.0 GB of archives <= 0.4 x 0.0 GB available RAM: loading into RAM"
    )
    monkeypatch.setattr(colab, "_meminfo", lambda: {"MemAvailable": 2499})  # 1000 > 0.4 x 2499
    in_memory, why = colab.choose_in_memory([archive])
    assert not in_memory and "memory-mapping" in why
    assert colab.choose_in_memory([archive], override=True)[0] is True  # the user's choice wins
    assert "as set" in colab.choose_in_memory([archive], override=True)[1]
    monkeypatch.setattr(colab, "_meminfo", lambda: {})  # no /proc/meminfo: the safe choice
    assert colab.choose_in_memory([archive])[0] is False
    # The 6 GB archive on a 12.7 GB Colab runtime (about 11 GB available) is memory-mapped.
    monkeypatch.setattr(colab, "_meminfo", lambda: {"MemAvailable": 11_000_000_000})
    monkeypatch.setattr(Path, "stat", lambda self: os.stat_result((0,) * 6 + (6_000_000_000, 0, 0, 0)))
    assert colab.choose_in_memory([archive])[0] is False


def test_training_refuses_an_unmounted_drive(tmp_path: Path) -> None:
    fake_mount = tmp_path / "content" / "drive"
    fake_mount.mkdir(parents=True)
    with pytest.raises(DataError, match="is not mounted .* run the Google Drive cell again"):
        colab.require_mounted(fake_mount / "MyDrive" / "maskdepth", mount_point=str(fake_mount))
    colab.require_mounted(tmp_path / "elsewhere", mount_point=str(fake_mount))  # not under the mount: fine
    colab.require_mounted("/proc/self", mount_point="/proc")  # mounted: fine


def test_live_view_updates_one_display_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import io as _io

    import IPython.display
    from PIL import Image

    run = tmp_path / "myrun"
    (run / "samples").mkdir(parents=True)
    Image.new("RGB", (1800, 600), "red").save(run / "samples" / "epoch_001.png")
    Image.new("RGB", (1800, 600), "green").save(run / "samples" / "epoch_002.png")
    Image.new("RGB", (600, 300), "blue").save(run / "curves.png")
    calls: list[tuple[str, dict]] = []

    class Handle:
        def update(self, bundle: dict, raw: bool) -> None:
            calls.append(("update", bundle))

    def display(bundle: dict, raw: bool, display_id: bool) -> Handle:
        calls.append(("display", bundle))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    view = colab.LiveView(run, width=900)
    row = {"epoch": 1, "train_loss": 0.5, "val_iou": 0.25, "val_delta1": 0.75, "val_rmse": 0.125, "seconds": 3}
    view(row, model=None)
    view({**row, "epoch": 2, "val_iou": 0.5}, model=None)
    assert [kind for kind, _ in calls] == ["display", "update"]
    bundle = calls[-1][1]
    assert bundle["text/plain"] == "myrun  epoch 2  train loss 0.5000  val IoU 0.500  δ1 0.750  RMSE 0.1250  3s"
    with Image.open(_io.BytesIO(base64.b64decode(bundle["image/png"]))) as im:
        # the grid shrunk to 900 px (300 high), the curves below it at their own 600 px
        assert im.size == (900, 600)
        rgb = im.convert("RGB")
        assert rgb.getpixel((10, 10)) == (0, 128, 0) and rgb.getpixel((10, 450)) == (0, 0, 255)
    assert bundle["text/plain"] in bundle["text/html"]


def test_epochs_done_reads_last_pt(tmp_path: Path) -> None:
    from maskdepth.checkpoint import save_checkpoint

    assert colab.epochs_done(tmp_path) == 0
    save_checkpoint(tmp_path / "checkpoints" / "last.pt",
                    {"model": {}, "config": {}, "epoch": 3, "batch_in_epoch": 0, "step": 9})
    assert colab.epochs_done(tmp_path) == 3


def test_extract_pair_from_a_manifest_csv(tiny_data: Path, tmp_path: Path) -> None:
    from maskdepth.data.manifest import build_manifest

    folder = s15_folder(tiny_data, tmp_path / "s15")
    build_manifest(bg=folder / "bg_192.zip", fg_bg=folder / "fg_bg.zip", mask=folder / "mask.zip",
                   depth=folder / "fg_bg_depth_full.zip", out=folder / "manifest.csv")
    bg, fg_bg = colab.extract_pair(folder / "manifest.csv", tmp_path / "pair", index=3)
    with zipfile.ZipFile(folder / "fg_bg.zip") as z:
        assert fg_bg.read_bytes() == z.read(f"fg_bg/{fg_bg.name}")
    with zipfile.ZipFile(folder / "bg_192.zip") as z:
        assert bg.read_bytes() == z.read(f"bg_192/{fg_bg.name.split('_')[0]}.jpg")


def test_synthetic_once_names_the_archive_by_what_changes_the_data(tmp_path: Path, monkeypatch) -> None:
    import functools

    from maskdepth import synth

    made = []

    @functools.wraps(synth.make_dataset)  # the real signature: synthetic_once reads its defaults
    def fake_make(path, **options):  # records the call, writes a placeholder archive
        made.append((Path(path).name, options))
        Path(path).write_bytes(b"zip")

    monkeypatch.setattr("maskdepth.synth.make_dataset", fake_make)
    full = colab.synthetic_once(tmp_path, progress=False, size=64, num_bg=10, num_fg=8, per_pair=1)
    dealt = colab.synthetic_once(tmp_path, progress=False, size=64, num_bg=10, num_fg=8, per_pair=1, fg_per_bg=2)
    same = colab.synthetic_once(tmp_path, progress=False, size=64, num_bg=10, num_fg=8, per_pair=1, fg_per_bg=8)
    assert full.name == "synthetic_64px_10bg_8fg_1pp_seed0.zip" == same.name  # K = num_fg: the same data
    assert dealt.name == "synthetic_64px_10bg_2of8fg_1pp_seed0.zip"
    assert [name for name, _ in made] == [full.name, dealt.name]  # the third call found the first file
    assert made[1][1]["fg_per_bg"] == 2
