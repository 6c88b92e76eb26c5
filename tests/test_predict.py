"""`maskdepth predict` on many composites, a pairs CSV, and a video: outputs, batching, errors."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskdepth.cli import main
from maskdepth.errors import ConfigError, DataError
from maskdepth.inference import Predictor, predict_pairs
from maskdepth.model import build_model
from maskdepth.pairs import read_pairs_csv
from maskdepth.video import side_by_side

from test_inference import _png, _write_checkpoint

av = pytest.importorskip("av")  # the `video` extra, part of `dev`

H, W, FRAMES, FPS = 48, 64, 8, 10
BG_RGB = (60, 70, 80)
OBJECT_RGB = (230, 200, 40)


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, seeded MaskDepthNet: outputs arbitrary but deterministic."""
    return _write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", tiny_data)


@pytest.fixture(scope="module")
def detector(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MaskDepthNet whose mask head is set by hand to threshold the colour difference between
    fg_bg and bg: logit = 2 * sum_c |fg_bg_c - bg_c| / std - 3, so a pixel that differs by more
    than ~0.4 in one channel is foreground. It stands in for a trained model, which the tests
    cannot afford to train, so that the mask panel of a video can be checked against the object."""
    torch.manual_seed(0)
    model = build_model("maskdepth", base_channels=8)
    refine, out = model.mask_head.refine[0], model.mask_head.out
    first_diff = refine.in_channels - (11 if model.coords else 9) + 6  # the (fg_bg - bg) planes of x
    with torch.no_grad():
        refine.weight.zero_()
        out.weight.zero_()
        for c in range(3):
            refine.weight[2 * c, first_diff + c, 1, 1] = 1.0  # relu(+diff_c)
            refine.weight[2 * c + 1, first_diff + c, 1, 1] = -1.0  # relu(-diff_c)
        out.weight[0, :6, 1, 1] = 2.0
        out.bias.fill_(-3.0)
    return _write_checkpoint(tmp_path_factory.mktemp("detector") / "best.pt", tiny_data, model=model)


def _object_box(i: int) -> tuple[slice, slice]:
    """Rows and columns of the 20 x 24 px object in frame i; it moves 4 px right per frame."""
    return slice(12, 32), slice(4 + 4 * i, 28 + 4 * i)


def _make_video(path: Path, bg: np.ndarray) -> Path:
    """FRAMES frames of H x W at FPS: bg with the object moving, H.264 at near-lossless quality."""
    with av.open(str(path), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(FRAMES):
            frame = bg.copy()
            frame[_object_box(i)] = OBJECT_RGB
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _read_video(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], stream.average_rate


def _scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    bg = np.empty((H, W, 3), np.uint8)
    bg[:] = BG_RGB
    bg[:, :, 0] += np.linspace(0, 30, W, dtype=np.uint8)[None]  # a gentle gradient, not a flat colour
    path = tmp_path / "bg.png"
    Image.fromarray(bg).save(path)
    return path, bg


# ---------------------------------------------------------------------------------------------
# images: one background, many composites; batching; the pairs CSV


def test_one_bg_many_composites_writes_outputs_per_composite(checkpoint: Path, tmp_path: Path) -> None:
    bg = _png(tmp_path / "bg.png", 40, 56, seed=1)
    (tmp_path / "shots").mkdir()
    for i in range(5):
        _png(tmp_path / "shots" / f"shot{i}.jpg", 40, 56, seed=10 + i)
    written = predict_pairs(checkpoint, bg=bg, fg_bg=tmp_path / "shots", out=tmp_path / "out", device="cpu",
                            batch_size=2, progress=True)
    assert [p.name for p in written[::4]] == [f"shot{i}_mask.png" for i in range(5)]
    assert len(written) == 20 and all(Image.open(p).size == (56, 40) for p in written)

    by_glob = predict_pairs(checkpoint, bg=bg, fg_bg=str(tmp_path / "shots" / "shot[13].jpg"),
                            out=tmp_path / "glob", device="cpu")
    assert [p.name for p in by_glob[::4]] == ["shot1_mask.png", "shot3_mask.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(by_glob[1])), np.asarray(Image.open(written[5])))


def test_batching_gives_the_outputs_of_batch_one(checkpoint: Path, tmp_path: Path) -> None:
    bg = _png(tmp_path / "bg.png", 32, 48, seed=1)
    (tmp_path / "shots").mkdir()
    for i in range(5):
        _png(tmp_path / "shots" / f"s{i}.png", 32, 48, seed=20 + i)
    one = predict_pairs(checkpoint, bg=bg, fg_bg=tmp_path / "shots", out=tmp_path / "b1", device="cpu", batch_size=1)
    three = predict_pairs(checkpoint, bg=bg, fg_bg=tmp_path / "shots", out=tmp_path / "b3", device="cpu", batch_size=3)
    assert [p.name for p in one] == [p.name for p in three]
    for a, b in zip(one, three, strict=True):
        x, y = np.asarray(Image.open(a)).astype(np.int64), np.asarray(Image.open(b)).astype(np.int64)
        if a.name.endswith("_depth.png"):
            assert np.abs(x - y).max() <= 3  # 16-bit levels: |depth difference| <= 5e-5
        elif a.name.endswith("_mask.png"):
            assert np.mean(x != y) <= 0.01  # only pixels whose probability is within float noise of 0.5


def test_predictor_batches_inputs_of_different_sizes(checkpoint: Path) -> None:
    predictor = Predictor.load(checkpoint, device="cpu")
    assert predictor.dtype is None and predictor.size == 32  # fp32 off CUDA
    bgs = [torch.rand(3, 40, 56), torch.rand(3, 32, 32)]
    masks, depths = predictor(bgs, [b.flip(-1) for b in bgs])
    assert [m.shape for m in masks] == [(40, 56), (32, 32)] and masks[0].dtype == bool
    assert [d.shape for d in depths] == [(40, 56), (32, 32)] and all(0 <= d.min() and d.max() <= 1 for d in depths)

    # The autocast path (what CUDA runs in bf16 or fp16), exercised here in bf16 on the CPU.
    half = Predictor.load(checkpoint, device="cpu", amp="bf16")
    assert half.dtype == torch.bfloat16
    _, half_depths = half(bgs, [b.flip(-1) for b in bgs])
    assert all(h.dtype == np.float32 and np.abs(h - d).max() < 0.05 for h, d in zip(half_depths, depths, strict=True))


def test_pairs_csv(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "set" / "shots").mkdir(parents=True)
    _png(tmp_path / "set" / "room.png", 32, 32, seed=1)
    _png(tmp_path / "set" / "shots" / "a.jpg", 32, 32, seed=2)
    far_bg = _png(tmp_path / "street.png", 24, 40, seed=3)
    _png(tmp_path / "set" / "b.png", 24, 40, seed=4)
    csv = tmp_path / "set" / "pairs.csv"
    csv.write_text(f"bg,fg_bg,note\nroom.png,shots/a.jpg,relative\n{far_bg},b.png,absolute bg\n\n")
    assert [(b.name, f.name) for b, f in read_pairs_csv(csv)] == [("room.png", "a.jpg"), ("street.png", "b.png")]

    assert main(["predict", str(checkpoint), "--pairs", str(csv), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--quiet"]) == 0
    assert Image.open(tmp_path / "out" / "b_depth.png").size == (40, 24)
    assert str(tmp_path / "out" / "a_mask.png") in capsys.readouterr().out

    csv.write_text("bg,fg_bg\nroom.png,shots/a.jpg\nroom.png,gone.jpg\nnope.png,b.png\n")
    assert main(["predict", str(checkpoint), "--pairs", str(csv), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("maskdepth: error: --pairs")
    assert "2 file(s) not found" in err and "gone.jpg (line 3)" in err and "nope.png (line 4)" in err
    assert not (tmp_path / "out2").exists()

    csv.write_text("background,composite\nroom.png,shots/a.jpg\n")
    with pytest.raises(DataError, match="needs a header row with bg and fg_bg columns, found background,composite"):
        read_pairs_csv(csv)
    with pytest.raises(ConfigError, match="not both"):
        predict_pairs(checkpoint, bg=far_bg, pairs=csv, out=tmp_path / "out3")


def test_predict_argument_errors_are_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bg = _png(tmp_path / "bg.png", 32, 32)
    cases = [
        (["--bg", str(bg), "--fg-bg", str(bg), "--device", "tpu"], "--device must be auto, cpu, cuda, cuda:N or mps"),
        (["--bg", str(bg), "--fg-bg", str(bg), "--video", "x.mp4"], "give one of --fg-bg, --pairs or --video"),
        (["--fg-bg", str(bg)], "--fg-bg needs --bg"),
        (["--bg", str(bg), "--fg-bg", str(bg), "--frames", "f"], "--frames writes the frames of --video"),
        (["--bg", str(bg), "--video", str(tmp_path / "none.mp4")], "none.mp4: no such file"),
    ]
    if not torch.cuda.is_available():
        cases += [(["--bg", str(bg), "--fg-bg", str(bg), "--device", "cuda"], "CUDA is not available"),
                  (["--bg", str(bg), "--fg-bg", str(bg), "--amp", "fp16"], "--amp fp16 needs CUDA")]
    for args, message in cases:
        assert main(["predict", str(checkpoint), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("maskdepth: error: ") and err.count("\n") == 1 and message in err, (args, err)


# ---------------------------------------------------------------------------------------------
# video


def test_video_side_by_side(detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bg_path, bg = _scene(tmp_path)
    video = _make_video(tmp_path / "in.mp4", bg)
    out = tmp_path / "pred" / "out.mp4"
    assert main(["predict", str(detector), "--bg", str(bg_path), "--video", str(video), "--out", str(out),
                 "--frames", str(tmp_path / "frames"), "--batch-size", "3", "--device", "cpu"]) == 0
    assert f"wrote {out} ({FRAMES} frames" in capsys.readouterr().out

    frames, rate = _read_video(out)
    assert len(frames) == FRAMES and rate == FPS
    assert all(f.shape == (H, 3 * W, 3) for f in frames)
    for i in (0, FRAMES - 1):
        rows, cols = _object_box(i)
        inner = (slice(rows.start + 4, rows.stop - 4), slice(cols.start + 4, cols.stop - 4))
        input_panel, mask_panel = frames[i][:, :W], frames[i][:, W:2 * W]
        assert np.abs(input_panel[inner].astype(int) - OBJECT_RGB).mean() < 12  # the input frame, unchanged
        assert mask_panel[inner].mean() > 200  # the object is foreground
        outside = np.ones((H, W), bool)
        outside[rows.start - 4:rows.stop + 4, max(cols.start - 4, 0):cols.stop + 4] = False
        assert mask_panel[outside].mean() < 30  # the rest is background
    assert not np.array_equal(frames[0][:, W:2 * W], frames[-1][:, W:2 * W])  # it follows the object

    written = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert len(written) == 2 * FRAMES and written[:2] == ["frame_000000_depth.png", "frame_000000_mask.png"]
    mask0 = np.asarray(Image.open(tmp_path / "frames" / "frame_000000_mask.png"))
    depth0 = Image.open(tmp_path / "frames" / "frame_000000_depth.png")
    assert mask0.shape == (H, W) and set(np.unique(mask0)) == {0, 255} and mask0[_object_box(0)].mean() > 200
    assert depth0.mode in ("I;16", "I") and depth0.size == (W, H)


def test_video_errors(detector: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    bg_path, bg = _scene(tmp_path)
    video = _make_video(tmp_path / "in.mp4", bg)
    square_bg = _png(tmp_path / "square.png", 48, 48)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    cases = [
        (["--bg", str(square_bg), "--video", str(video)], "is 48x48 but the frames of"),
        (["--bg", str(bg_path), "--video", str(not_video)], "notes.mp4: not a readable video"),
        (["--bg", str(bg_path), "--video", str(video), "--out", str(tmp_path / "x.gif")], "must end in .mp4"),
    ]
    for args, message in cases:
        assert main(["predict", str(detector), *args, "--device", "cpu"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("maskdepth: error: ") and err.count("\n") == 1 and message in err, (args, err)
    assert not (tmp_path / "in_pred.mp4").exists()

    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError, as when it is not installed
    assert main(["predict", str(detector), "--bg", str(bg_path), "--video", str(video)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install av" in err and "pip install 'maskdepth[video]'" in err


def test_side_by_side_pads_odd_sizes_to_even() -> None:
    rgb = np.full((5, 7, 3), 9, np.uint8)
    mask = np.zeros((5, 7), bool)
    mask[2, 3] = True
    panel = side_by_side(rgb, mask, np.full((5, 7), 0.5, np.float32))
    assert panel.shape == (6, 22, 3) and panel.dtype == np.uint8
    assert (panel[:5, :7] == 9).all() and panel[2, 10].tolist() == [255] * 3 and panel[1, 10].tolist() == [0] * 3
    assert (panel[5] == 0).all() and (panel[:, 21] == 0).all()  # the padding row and column


# ---------------------------------------------------------------------------------------------
# issue 24: outputs never overwrite inputs; truncated videos and reused --frames folders


def test_an_output_that_is_an_input_is_refused(detector: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bg_path, bg = _scene(tmp_path)
    video = _make_video(tmp_path / "in.mp4", bg)
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    before = video.read_bytes()
    shots = tmp_path / "shots"
    shots.mkdir()
    fg = _png(shots / "a.png", W, H)
    clash = _png(shots / "a_mask.png", W, H)  # the bg is named like a's mask output
    cases = [(["--bg", str(bg_path), "--video", str(video), "--out", str(video)],
              f"--out {video} is the input --video"),
             (["--bg", str(bg_path), "--video", str(video), "--out", str(link)], f"--out {link} is the input --video"),
             (["--bg", str(clash), "--fg-bg", str(fg), "--out", str(shots)], f"--out writes {clash} is the input --bg")]
    for args, message in cases:
        assert main(["predict", str(detector), *args, "--device", "cpu"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("maskdepth: error: ") and err.count("\n") == 1 and message in err, (args, err)
    assert video.read_bytes() == before


def test_a_truncated_video_is_an_error_unless_keep_going(detector: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bg_path, bg = _scene(tmp_path)
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:  # moov at the front
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(FRAMES):
            frame = bg.copy()
            frame[_object_box(i)] = OBJECT_RGB
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(full)) as container:  # cut at the start of the 6th packet: frames 0-4 decode, no error
        starts = [p.pos for p in container.demux(container.streams.video[0]) if p.pos is not None and p.pos >= 0]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: starts[5]])
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "frame_999999_mask.png").write_bytes(b"stale")  # of an earlier, longer clip
    (frames / "notes.txt").write_text("not ours")
    out = tmp_path / "out.mp4"
    args = ["predict", str(detector), "--bg", str(bg_path), "--video", str(cut), "--out", str(out), "--device", "cpu",
            "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--video {cut}: only " in err and f"of the {FRAMES} frames its container" in err
    assert "--keep-going" in err and not out.exists()
    with pytest.warns(UserWarning, match="truncated"):
        assert main([*args, "--keep-going", "--frames", str(frames)]) == 0
    count = len(_read_video(out)[0])
    assert count == 5
    assert sorted(p.name for p in frames.iterdir()) == sorted(
        [f"frame_{i:06d}_{k}.png" for i in range(count) for k in ("depth", "mask")] + ["notes.txt"])


def test_a_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped_white(tmp_path: Path) -> None:
    """Issue 24: PIL's convert("RGB") clips I;16, so a 16-bit composite read as all white."""
    from maskdepth.data import read_image_file
    from maskdepth.data.images import decode_rgb

    values = np.tile(np.array([0, 16384, 32768, 65535], np.uint16), (8, 2))  # 8 x 8
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    expected = np.rint(values / 257.0) / 255.0
    image = read_image_file(path)  # predict and the video's background
    assert image.shape == (3, 8, 8)
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    rgb, stored = decode_rgb(path.read_bytes(), None)  # the dataset
    assert stored == (8, 8)
    np.testing.assert_array_equal(rgb[..., 1], np.rint(values / 257.0).astype(np.uint8))
