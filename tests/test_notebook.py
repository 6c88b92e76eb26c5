"""The Colab notebook: committed clean, runs end to end headlessly with SMOKE_TEST, and its helpers.

    pytest tests/test_notebook.py

`test_notebook_runs_end_to_end` executes notebooks/train_colab.ipynb in a Jupyter kernel of this
interpreter (nbclient), with the parameters injected the way papermill does it (a cell after the
`parameters` cell) so that Drive and local disk are folders in tmp_path. It fails on any cell
error, and checks that the sample grids and curves were displayed and the run directories written.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from maskdepth import colab
from maskdepth.errors import DataError

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
    for name in ("DRIVE_DIR", "DATASET_ZIP", "CONFIG", "IMAGE_SIZE", "EPOCHS", "BATCH_SIZE", "RUN_NAME"):
        assert re.search(rf"^{name} = ", params.source, re.M), f"parameter {name} missing"
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


def test_notebook_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    drive, local = tmp_path / "drive", tmp_path / "local"
    index, _ = _the_cell(nb, "parameters")
    injected = nbformat.v4.new_code_cell(
        f"SMOKE_TEST = True\nDRIVE_DIR = {str(drive)!r}\nLOCAL_DIR = {str(local)!r}\nDATASET_ZIP = ''\n",
        metadata={"tags": ["injected-parameters"]},
    )
    which = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    nb.cells[index + 1 : index + 1] = [injected]
    nb.cells.insert(0, which)

    _kernel_spec(tmp_path, monkeypatch)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=300,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    started = time.monotonic()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)  # raises CellExecutionError on any cell error
        train_index, train_cell = _the_cell(nb, "train")
        first_train = _text(train_cell)
        # A second run of the training cell (as after a disconnect) continues the run from last.pt.
        client.execute_cell(train_cell, train_index)
    seconds = time.monotonic() - started
    print(f"notebook executed in {seconds:.0f} s")

    assert _text(nb.cells[0]).strip() == sys.executable
    assert "training starts at epoch 1" in first_train
    again = _text(train_cell)
    assert "2 epochs done" in again and "all 2 epochs" in again, again

    shown = ["latest-grid", "curves", "predict", "final-latest-grid", "final-curves", "final-evaluate"]
    if importlib.util.find_spec("ipywidgets") is None:  # with it, the pickers are sliders (widget outputs)
        shown += ["pick-grid", "final-pick-grid"]
    for tag in shown:
        assert _has_png(_the_cell(nb, tag)[1]), f"cell {tag!r} displayed no image"
    assert "epoch 2" in _text(_the_cell(nb, "latest-grid")[1])
    assert "iou" in _text(_the_cell(nb, "evaluate")[1]).lower()

    for name, epochs in (("smoke_quick64", 2), ("smoke_full192", 1)):
        run = drive / "runs" / name
        for rel in ("config.yaml", "split.json", "metrics.csv", "curves.png", "checkpoints/last.pt",
                    "checkpoints/best.pt", "test_metrics.json", *(f"samples/epoch_{e:03d}.png" for e in range(1, epochs + 1))):
            assert (run / rel).is_file(), f"{run / rel} missing"
        with open(run / "metrics.csv", newline="") as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, epochs + 1))
        assert any(p.name.endswith("_mask.png") for p in (run / "predictions").iterdir())
    # Both synthetic datasets were generated on "local disk" and cached on "Drive".
    assert len(list(local.glob("synthetic_*.zip"))) == 2
    assert sorted(p.name for p in (drive / "data").glob("*.zip")) == sorted(p.name for p in local.glob("synthetic_*.zip"))


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
    assert colab.metrics_table(tmp_path / "metrics.csv", ["epoch", "extra"]) == "epoch  extra\n    1      7\n    2      8"
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

    assert colab.resume_message(tmp_path / "run") == f"{tmp_path / 'run'}: no checkpoints/last.pt yet, training starts at epoch 1"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(last, {"model": {}, "config": {}, "epoch": 2, "batch_in_epoch": 5, "step": 17})
    message = colab.resume_message(tmp_path / "run", epochs=4)
    assert message.endswith("2 epochs done and 5 batches of epoch 3, step 17; training resumes at epoch 3, batch 6")
    save_checkpoint(last, {"model": {}, "config": {}, "epoch": 4, "batch_in_epoch": 0, "step": 40})
    assert colab.resume_message(tmp_path / "run", epochs=4).endswith(
        "4 epochs done, step 40; the run has all 4 epochs: raise EPOCHS to train longer")
    assert colab.resume_message(tmp_path / "run", epochs=6).endswith("training resumes at epoch 5")


def test_pick_grid_offers_a_slider_over_the_epochs_when_ipywidgets_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    for epoch in (1, 2, 4):
        (samples / f"epoch_{epoch:03d}.png").write_bytes(b"")
    shown: list[Path] = []
    monkeypatch.setattr(colab, "show_image", lambda path: shown.append(Path(path)))

    class SelectionSlider:
        def __init__(self, **kwargs: object) -> None:
            self.kwargs = kwargs

    def interact(function, epoch: SelectionSlider) -> None:  # the first draw, then a move of the slider
        function(epoch.kwargs["value"])
        function(epoch.kwargs["options"][0])

    fake = type(sys)("ipywidgets")
    fake.SelectionSlider, fake.interact = SelectionSlider, interact
    monkeypatch.setitem(sys.modules, "ipywidgets", fake)
    colab.pick_grid(tmp_path)
    assert shown == [samples / "epoch_004.png", samples / "epoch_001.png"]
    colab.pick_grid(tmp_path, 2)  # an epoch given: that grid, no slider
    assert shown[-1] == samples / "epoch_002.png"

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed: the latest grid
    colab.pick_grid(tmp_path)
    assert shown[-1] == samples / "epoch_004.png" and len(shown) == 4
