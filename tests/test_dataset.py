"""The dataset: item contract, background splits, bad data, workers under fork and spawn, batch memory."""

from __future__ import annotations

import io
import json
import multiprocessing
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from maskdepth.data import collate, open_dataset, read_image_file
from maskdepth.data.dataset import IMAGE_KEYS
from maskdepth.data.splits import split_backgrounds
from maskdepth.errors import ConfigError, DataError

from data_helpers import jpeg_bytes, png_bytes, scene, write_dataset_zip


@pytest.fixture(scope="module")
def data_zip(tmp_path_factory) -> Path:
    """10 backgrounds x 3 samples, 32 px."""
    path = tmp_path_factory.mktemp("ds") / "d.zip"
    write_dataset_zip(path, num_bg=10, per_bg=3)
    return path


def test_item_contract(data_zip):
    ds = open_dataset(data_zip, size=32, split="all")
    assert len(ds) == 30 and ds.size == 32
    item = ds[4]
    assert set(item) == {"bg", "fg_bg", "mask", "depth", "index", "name", "bg_id", "fg_id"}
    for key, channels in (("bg", 3), ("fg_bg", 3), ("mask", 1), ("depth", 1)):
        assert item[key].shape == (channels, 32, 32) and item[key].dtype == torch.float32
    assert 0 <= item["fg_bg"].min() and item["fg_bg"].max() <= 1
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["depth"].min() > 0 and item["depth"].max() <= 1
    assert (item["index"], item["name"], item["bg_id"], item["fg_id"]) == (4, "bg001_fg001", "bg001", "fg001")
    # the pasted square (scene k=1: rows and columns 5..15) is the mask
    expected = np.zeros((32, 32), np.float32)
    expected[5:15, 5:15] = 1
    np.testing.assert_array_equal(item["mask"][0].numpy(), expected)
    # bg is the stored JPEG decoded (R channel of column 0 of background 1 is 40 / 255)
    assert abs(float(item["bg"][0, 10, 0]) - 40 / 255) < 8 / 255
    assert ds.info["mean"] == [0.5] * 3  # from dataset.json


@pytest.mark.parametrize("size", [16, 48])
def test_resizing(data_zip, size):
    item = open_dataset(data_zip, size=size, split="all")[4]
    assert item["fg_bg"].shape == (3, size, size) and item["mask"].shape == (1, size, size)
    scale = size / 32
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert abs(float(item["mask"].sum()) - 100 * scale**2) <= 4 * 10 * scale + 4  # nearest: the square, up to its edges
    assert item["depth"].min() > 0


def test_splits_hold_out_backgrounds_and_are_reproducible(data_zip, tmp_path):
    parts = {s: open_dataset(data_zip, size=32, split=s) for s in ("train", "val", "test")}
    assert [len(parts[s].splits[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    bgs = {s: {parts[s][i]["bg_id"] for i in range(len(parts[s]))} for s in parts}
    assert bgs["train"].isdisjoint(bgs["val"]) and bgs["train"].isdisjoint(bgs["test"])
    assert bgs["val"].isdisjoint(bgs["test"])
    assert {s: sorted(b) for s, b in bgs.items()} == parts["train"].splits
    assert sum(len(p) for p in parts.values()) == 30

    again = open_dataset(data_zip, size=32, split="train")
    assert again.splits == parts["train"].splits and again.rows.tolist() == parts["train"].rows.tolist()
    other = [open_dataset(data_zip, size=32, split="val", split_seed=seed).splits["val"] for seed in range(1, 6)]
    assert any(v != parts["val"].splits["val"] for v in other)

    # the split depends on the set of backgrounds, not on the row order of the manifest
    shuffled = tmp_path / "shuffled.zip"
    with zipfile.ZipFile(data_zip) as src, zipfile.ZipFile(shuffled, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "manifest.csv":
                header, *lines = data.decode().splitlines()
                data = "\n".join([header] + lines[::-1]).encode()
            dst.writestr(name, data)
    assert open_dataset(shuffled, size=32, split="train").splits == parts["train"].splits


def test_split_counts():
    assert [len(v) for v in split_backgrounds([f"b{i}" for i in range(3)]).values()] == [1, 1, 1]
    assert [len(v) for v in split_backgrounds([f"b{i}" for i in range(100)]).values()] == [80, 10, 10]
    assert [len(v) for v in split_backgrounds([f"b{i}" for i in range(4)], (0.5, 0.5, 0.0)).values()] == [2, 2, 0]
    with pytest.raises(ConfigError, match="summing to 1"):
        split_backgrounds(["a", "b", "c"], (0.8, 0.1, 0.2))


def test_too_few_backgrounds(tmp_path):
    path = tmp_path / "two.zip"
    write_dataset_zip(path, num_bg=2, per_bg=2)
    with pytest.raises(DataError, match=r"two.zip has 2 background\(s\) \(bg000, bg001\).*at least 3.*split 'all'"):
        open_dataset(path, size=32, split="train")
    assert len(open_dataset(path, size=32, split="all")) == 4
    with pytest.warns(UserWarning, match="splits samples, not backgrounds"):
        train = open_dataset(path, size=32, split="train", split_mode="random")
    assert len(train) == 2  # 4 samples: 2 / 1 / 1


def test_random_split_warns_and_partitions_samples(data_zip):
    with pytest.warns(UserWarning, match="splits samples, not backgrounds"):
        parts = [open_dataset(data_zip, size=32, split=s, split_mode="random") for s in ("train", "val", "test")]
    rows = [set(p.rows.tolist()) for p in parts]
    assert [len(r) for r in rows] == [24, 3, 3] and set.union(*rows) == set(range(30))


def test_bad_arguments(data_zip):
    with pytest.raises(ConfigError, match="data.size"):
        open_dataset(data_zip, size=0)
    with pytest.raises(ConfigError, match="split must be one of"):
        open_dataset(data_zip, size=32, split="validation")
    with pytest.raises(ConfigError, match="split_mode"):
        open_dataset(data_zip, size=32, split_mode="scene")


def _all_items(ds, **loader_args):
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate, **loader_args)
    return [b for b in loader]


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_give_the_same_samples(data_zip, context):
    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} on this platform")
    ds = open_dataset(data_zip, size=32, split="train", in_memory=True)
    one_by_one = [ds[i] for i in range(len(ds))]
    got = _all_items(ds, num_workers=2, multiprocessing_context=context)
    assert len(got) == 6 and sum(len(b["name"]) for b in got) == len(ds) == 24
    for k, batch in enumerate(got):
        expected = one_by_one[4 * k : 4 * k + 4]
        assert batch["name"] == [e["name"] for e in expected] and batch["skipped"] == 0
        assert batch["index"].tolist() == [4 * k + j for j in range(4)]
        for key in ("bg", "fg_bg", "mask", "depth"):
            assert torch.equal(batch[key], torch.stack([e[key] for e in expected])), key


def test_batches_are_decoded_into_one_buffer(data_zip):
    ds = open_dataset(data_zip, size=32, split="all")
    items = ds.__getitems__([5, 2, 7])
    batch = collate(items)
    assert batch["fg_bg"].data_ptr() == items[0]["fg_bg"].data_ptr()  # handed on, not copied
    for j, i in enumerate([5, 2, 7]):
        single = ds[i]
        for key in ("bg", "fg_bg", "mask", "depth"):
            assert torch.equal(batch[key][j], single[key])
    assert batch["index"].tolist() == [5, 2, 7] and batch["skipped"] == 0


class _CollateInWorker(torch.utils.data.Dataset):
    """Runs __getitems__ + collate inside a worker; reports whether the batch reused the buffer."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return 1

    def __getitem__(self, i):
        items = self.ds.__getitems__([0, 1, 2])
        batch = collate(items)
        return batch["fg_bg"].data_ptr() == items[0]["fg_bg"].data_ptr(), batch["fg_bg"].is_shared()


@pytest.mark.parametrize("uint8", [False, True])
def test_batches_in_workers_are_shared_memory_without_copies(data_zip, uint8):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    ds = open_dataset(data_zip, size=32, split="all", uint8=uint8)
    loader = DataLoader(_CollateInWorker(ds), batch_size=None, num_workers=1, multiprocessing_context="fork")
    assert [list(flags) for flags in loader] == [[True, True]]


def test_untuned_memory_gives_the_same_batches_in_plain_buffers(data_zip):
    """tuned_memory=False (what a benchmark compares against): the same batches, handed on by
    collate without a copy, but made as plain tensors inside a worker (DataLoader copies them
    into shared memory when it sends them)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    tuned = open_dataset(data_zip, size=32, split="all", uint8=True)
    plain = open_dataset(data_zip, size=32, split="all", uint8=True, tuned_memory=False)
    loader = DataLoader(_CollateInWorker(plain), batch_size=None, num_workers=1, multiprocessing_context="fork")
    assert [list(flags) for flags in loader] == [[True, False]]
    expected, got = collate(tuned.__getitems__([0, 3, 5])), collate(plain.__getitems__([0, 3, 5]))
    assert all(torch.equal(got[key], expected[key]) for key in IMAGE_KEYS)
    pairs = zip(_all_items(tuned, num_workers=1), _all_items(plain, num_workers=1), strict=True)
    assert all(torch.equal(a[key], b[key]) for a, b in pairs for key in IMAGE_KEYS)


def test_uint8_batches_become_the_float_batches(data_zip):
    """uint8=True: bg / fg_bg uint8 0..255, mask uint8 {0, 1}, depth float32; to_float gives the
    float dataset's batch bit for bit, in the main process and from workers."""
    from maskdepth.data import to_float

    floats = open_dataset(data_zip, size=24, split="all")
    bytes_ = open_dataset(data_zip, size=24, split="all", uint8=True)
    expected = collate(floats.__getitems__(list(range(8))))
    batches = [collate(bytes_.__getitems__(list(range(8)))), _all_items(bytes_, num_workers=1)[:2]]
    batches[1] = {key: torch.cat([b[key] for b in batches[1]]) for key in IMAGE_KEYS}
    for batch in batches:
        assert [batch[k].dtype for k in IMAGE_KEYS] == [torch.uint8, torch.uint8, torch.uint8, torch.float32]
        assert set(batch["mask"].unique().tolist()) <= {0, 1} and batch["bg"].max() > 1
        converted = to_float(batch)
        assert batch["bg"].dtype == torch.uint8  # a new dict: the batch itself is unchanged
        for key in IMAGE_KEYS:
            assert converted[key].dtype == torch.float32
            assert torch.equal(converted[key], expected[key]), key
    item = bytes_[3]
    assert item["fg_bg"].dtype == torch.uint8 and item["fg_bg"].shape == (3, 24, 24)
    assert to_float(expected) is not expected and to_float(expected)["bg"] is expected["bg"]  # floats pass


def test_pickled_dataset_carries_no_archive_bytes(data_zip):
    ds = open_dataset(data_zip, size=32, split="train", in_memory=True)
    assert isinstance(ds.manifest.archives[0]._buf, bytes)
    ds[0]  # fills the background cache
    data = pickle.dumps(ds)
    assert data.find(ds.manifest.archives[0]._buf[:2000]) < 0
    clone = pickle.loads(data)
    assert clone.manifest.archives[0]._buf is None and len(clone._bg_cache) == 0
    assert torch.equal(clone[3]["fg_bg"], ds[3]["fg_bg"])


def _rss_private_kb(pid: int) -> int:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Private_Clean"] + fields["Private_Dirty"]


def test_worker_memory_stable_over_epochs(tmp_path):
    if not Path("/proc/self/smaps_rollup").exists() or "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs Linux /proc and fork")
    path = tmp_path / "d.zip"
    write_dataset_zip(path, num_bg=20, per_bg=20, size=32)  # 400 samples
    ds = open_dataset(path, size=32, split="all", in_memory=True)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate, persistent_workers=True,
                        multiprocessing_context="fork")
    private = []
    for _ in range(5):
        for _ in loader:
            pass
        pids = [w.pid for w in loader._iterator._workers]
        private.append(sum(_rss_private_kb(pid) for pid in pids))
    # after the first epoch (caches warm), the workers' private memory does not keep growing
    growth_kb = private[-1] - private[1]
    assert growth_kb < 4096, private


def test_bad_entries_are_named(tmp_path):
    good = scene(32, 0, 0)
    cases = {
        "corrupt": ("fg_bg/bg001_fg001.jpg", jpeg_bytes(good["fg_bg"])[:300], "not a readable image|corrupt image"),
        "garbage": ("mask/bg001_fg001.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "not a readable image|corrupt image"),
        "size": ("depth/bg001_fg001.jpg", jpeg_bytes(good["depth"][:, :30]),
                 "image is 30x32 px but the dataset's size"),
        "zero": ("depth/bg001_fg001.jpg", png_bytes(np.zeros((32, 32), np.uint8)), "depth has no valid pixel"),
        "colour": ("depth/bg001_fg001.jpg", jpeg_bytes(good["fg_bg"]), "depth is a colour image"),
    }
    for case, (entry, data, message) in cases.items():
        path = tmp_path / f"{case}.zip"
        write_dataset_zip(path, num_bg=3, per_bg=2, replace={entry: data})
        ds = open_dataset(path, size=32, split="all")
        ds[0]
        with pytest.raises(DataError, match=rf"{case}.zip: {entry}: ({message})"):
            ds[3]
        skipping = open_dataset(path, size=32, split="all", skip_bad=True)
        assert skipping[3] is None and skipping.bad_count == 1, case


def test_wrong_size_without_dataset_json_compares_with_the_background(tmp_path):
    path = tmp_path / "nojson.zip"
    write_dataset_zip(path, num_bg=3, per_bg=1, dataset_json=False,
                      replace={"fg_bg/bg002_fg000.jpg": jpeg_bytes(scene(32, 2, 0)["fg_bg"][:31])})
    ds = open_dataset(path, size=16, split="all")
    with pytest.raises(DataError,
                       match=r"fg_bg/bg002_fg000.jpg: image is 32x31 px but its background .*bg/bg002.jpg is 32x32"):
        ds[2]
    assert len(ds.info["mean"]) == 3 and "estimated" in ds.info["mean_std_source"]


def test_missing_entry_is_named_when_opening(tmp_path):
    path = tmp_path / "missing.zip"
    write_dataset_zip(path, num_bg=3, per_bg=2, replace={"mask/bg002_fg001.png": None})
    with pytest.raises(DataError,
                       match=r"missing.zip: mask entry 'mask/bg002_fg001.png' \(line 7 of .*\) is not in the archive"):
        open_dataset(path, size=32, split="all")
    with pytest.warns(UserWarning, match="skip_bad: these samples are skipped"):
        ds = open_dataset(path, size=32, split="all", skip_bad=True)
    assert ds[5] is None and ds[4] is not None


def test_missing_manifest_missing_file_not_a_zip(tmp_path):
    path = tmp_path / "nomanifest.zip"
    write_dataset_zip(path, num_bg=3, per_bg=1, manifest=False)
    with pytest.raises(DataError, match=r"nomanifest.zip: no manifest.csv in the archive.*maskdepth index"):
        open_dataset(path, size=32)
    with pytest.raises(DataError, match="nothing.zip: dataset not found"):
        open_dataset(tmp_path / "nothing.zip", size=32)
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"\xff\xd8\xff" + bytes(500))
    with pytest.raises(DataError, match="fake.zip: not a zip archive"):
        open_dataset(fake, size=32)


def test_collate_drops_bad_items_and_counts_them(tmp_path):
    path = tmp_path / "bad.zip"
    write_dataset_zip(path, num_bg=3, per_bg=2, replace={"fg_bg/bg000_fg001.jpg": b"\xff\xd8\xff\xe0 broken"})
    ds = open_dataset(path, size=32, split="all", skip_bad=True)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate))
    assert [b["skipped"] for b in batches] == [1, 0, 0]
    assert batches[0]["fg_bg"].shape == (1, 3, 32, 32) and batches[0]["name"] == ["bg000_fg000"]
    assert collate([None, None]) is None


def test_read_image_file(tmp_path):
    rgb = scene(24, 1, 1)["fg_bg"]
    Image.fromarray(rgb).save(tmp_path / "x.png")
    image = read_image_file(tmp_path / "x.png")
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg")
    assert read_image_file(tmp_path / "gray.jpg").shape == (3, 24, 24)
    with pytest.raises(DataError, match="nope.png: image not found"):
        read_image_file(tmp_path / "nope.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg: not a readable image"):
        read_image_file(tmp_path / "bad.jpg")


def test_make_data_archive(tiny_data):
    ds = open_dataset(tiny_data, size=32, split="val")
    assert len(ds) > 0 and set(ds.splits) == {"train", "val", "test"}
    item = ds[0]
    assert item["depth"].min() > 0 and item["mask"].sum() > 0
    assert item["bg_id"] in ds.splits["val"]
    assert len(ds.info["mean"]) == 3


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, maskdepth.data; assert 'torch' not in sys.modules; "
            "maskdepth.data.read_image_file; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _pil_decode(data: bytes, size: int, mode: str) -> np.ndarray:
    """int16 [size, size(, 3)]: PIL's full decode, then its BILINEAR resize."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img).astype(np.int16)


def test_jpeg_fast_path_matches_pil_and_falls_back(monkeypatch):
    from maskdepth.data import images

    rgb = scene(48, 2, 1)["fg_bg"]
    gray = scene(48, 2, 1)["depth"]
    rgb_jpg, gray_jpg, gray_png = jpeg_bytes(rgb), jpeg_bytes(gray), png_bytes(gray)
    progressive = io.BytesIO()
    Image.fromarray(rgb).save(progressive, format="JPEG", quality=90, progressive=True)
    assert images._jpeg_frame(rgb_jpg) == (48, 48, 3, 8) and images._jpeg_frame(gray_jpg) == (48, 48, 1, 8)
    assert images._jpeg_frame(progressive.getvalue()) == (48, 48, 3, 8)
    assert images._jpeg_frame(gray_png) is None and images._jpeg_frame(b"\xff\xd8\xff") is None
    # used for the right channels at the stored size or smaller; PIL otherwise
    assert images._fast_jpeg(rgb_jpg, 48, 3) is not None and images._fast_jpeg(rgb_jpg, 24, 3) is not None
    assert images._fast_jpeg(rgb_jpg, 64, 3) is None and images._fast_jpeg(gray_jpg, 48, 3) is None
    assert images._fast_jpeg(gray_png, 48, 1) is None and images._fast_jpeg(rgb_jpg[:200], 48, 3) is None
    for size in (48, 24):
        fast_rgb, stored = images.decode_rgb(rgb_jpg, size)
        assert stored == (48, 48) and fast_rgb.shape == (size, size, 3) and fast_rgb.dtype == np.uint8
        assert np.abs(fast_rgb - _pil_decode(rgb_jpg, size, "RGB")).max() <= 1
        depth, scale, _ = images.decode_depth_raw(gray_jpg, size)
        assert scale == 255 and np.abs(depth - _pil_decode(gray_jpg, size, "L")).max() <= 1
    # without torchvision.io the same values come from PIL
    fast_rgb = images.decode_rgb(rgb_jpg, 48)[0].astype(np.int16)
    monkeypatch.setattr(images, "_decode_jpeg", None)
    assert images._fast_jpeg(rgb_jpg, 48, 3) is None
    assert np.abs(images.decode_rgb(rgb_jpg, 48)[0] - fast_rgb).max() <= 1


_PAGE_FAULTS = """
import ctypes, json, resource, sys, warnings
import torch
from maskdepth.data import _buffers

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

shapes = [(32, 3, 192, 192)] * 2 + [(32, 1, 192, 192)] * 2  # a float32 batch at 192 px: 37 MB, 9216 pages
if sys.argv[1] == "broken":  # the probe fails: tuning off, one warning, batches still made
    _buffers.MALLOPT.probe = lambda: ctypes.CDLL(None).no_such_function
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] != "default":
        for _ in range(3):
            _buffers.reuse_freed_batch_memory(sum(4 * s[0] * s[1] * s[2] * s[3] for s in shapes))
# 1. 100 MB freed at the top of the heap (chunks below any mmap threshold), taken again: in a fresh
# process glibc's default trims it at once (2 x its mmap threshold is at most 64 MB), so every page
# faults again
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
reuse = []
for _ in range(3):
    start = faults()
    chunks = [libc.malloc(100 << 10) for _ in range(1000)]
    for chunk in chunks:
        libc.memset(chunk, 1, 100 << 10)
    for chunk in chunks:
        libc.free(chunk)
    reuse.append(faults() - start)
# 2. the training loop: it holds the last two batches; 30 steps, the first 12 are warm-up
kept, per_step = [], []
for step in range(30):
    start = faults()
    kept.append([torch.empty(s).fill_(0.5) for s in shapes])
    del kept[:-2]
    per_step.append(faults() - start)
kept.clear()
print(json.dumps({"steady": sum(per_step[12:]) / 18, "reuse": reuse[1:],
                  "warnings": [str(w.message) for w in caught if "mallopt" in str(w.message)]}))
"""


def _glibc() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


@pytest.mark.slow  # over ~14 s on 2 cores (pytest --durations, 2026-12-07): make test-fast stays short
@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="glibc malloc tuning")
def test_freed_batches_are_reused_without_page_faults():
    """With the tuning, freed batches are reused: in the steady state (after 12 warm-up steps, which
    absorb glibc's heap growth) a step costs almost no page faults, and 100 MB of freed heap is
    taken again without faults, where glibc's default (and a failed probe, which warns once and
    leaves the default) faults on every page: so the test fails if the tuning is switched off."""
    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", _PAGE_FAULTS, mode], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    pages = 100 * 1024 // 4  # 25,600 pages of 4 kB in the reused 100 MB
    tuned, default, broken = run("tuned"), run("default"), run("broken")
    assert tuned["steady"] < 0.1 * 9216, tuned  # a fresh batch would be 9216 faults
    assert max(tuned["reuse"]) < 0.02 * pages, tuned
    assert tuned["warnings"] == []
    assert min(default["reuse"]) > 0.5 * pages, default  # what the tuning removes
    assert min(broken["reuse"]) > 0.5 * pages, broken
    assert len(broken["warnings"]) == 1
    assert "mallopt" in broken["warnings"][0] and "does not work here" in broken["warnings"][0]


def test_failed_shared_memory_probe_warns_once_and_batches_still_come(monkeypatch, tiny_data):
    """torch's private `_new_shared` probed as broken: one warning when the dataset is built (forked
    workers inherit the outcome), none per batch, and workers still deliver the same batches."""
    import warnings

    from maskdepth.data import _buffers

    def broken():
        raise AttributeError("'TypedStorage' object has no attribute '_new_shared'")

    monkeypatch.setattr(_buffers, "NEW_SHARED", _buffers.Probed("torch's _new_shared", broken, "copied when sent"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_dataset(tiny_data, size=32, split="all", uint8=True)
        loader = DataLoader(ds, batch_size=8, num_workers=1, collate_fn=collate, multiprocessing_context="fork")
        batches = list(loader)
    assert [str(w.message) for w in caught if "_new_shared" in str(w.message)] == [
        "maskdepth: torch's _new_shared does not work here (AttributeError: 'TypedStorage' object has no "
        "attribute '_new_shared'); copied when sent"
    ]
    expected = collate(ds.__getitems__(list(range(8))))
    assert all(torch.equal(batches[0][key], expected[key]) for key in IMAGE_KEYS)
    assert sum(len(b["index"]) for b in batches) == len(ds)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_filters(data: bytes) -> set[int]:
    import zlib

    pos, idat, header = 8, b"", None
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, bits = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big"), header[8]
    scan = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    assert scan.shape[1] == 1 + (width * bits + 7) // 8
    return set(scan[:, 0].tolist())


def _blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(3):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 12)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return mask


def test_png_masks_are_read_as_pil_reads_them():
    """maskdepth's own PNG reader gives PIL's pixels, at the stored size and resized by nearest
    (integer and odd ratios), for 1-bit and 8-bit masks with the filters PIL picks."""
    from maskdepth.data import images

    rng = np.random.default_rng(0)
    filters_seen: set[int] = set()
    fast = 0
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(5, 70, size=2))
        mask = _blobs(rng, h, w) | (rng.random((h, w)) < 0.02)
        img = Image.fromarray(mask) if trial % 2 else Image.fromarray(mask.astype(np.uint8) * 255)
        data = _png(img)
        filters = _png_filters(data)
        for size in (None, 17, 32, int(rng.integers(3, 90))):
            got = images._fast_png_mask(data, size)
            if max(filters) > 2:  # Average / Paeth rows: left to PIL
                assert got is None
                continue
            fast += 1
            filters_seen |= filters
            ref = img.convert("L")
            if size is not None:
                ref = ref.resize((size, size), Image.NEAREST)
            assert got[1] == (w, h) and got[0].dtype == np.uint8
            np.testing.assert_array_equal(got[0], np.asarray(ref) >= 128, err_msg=f"trial {trial} size {size}")
            # and the public decoder gives the same, whichever path it takes
            np.testing.assert_array_equal(images.decode_mask_binary(data, size)[0], got[0])
    assert fast >= 80 and {0, 1, 2} <= filters_seen  # None, Sub and Up all exercised


def test_mask_png_writer_round_trip():
    from maskdepth.data import images

    rng = np.random.default_rng(1)
    for h, w in ((1, 1), (7, 13), (192, 192), (31, 64)):
        mask = _blobs(rng, h, w)
        data = images.encode_mask_png(mask)
        img = Image.open(io.BytesIO(data))
        assert img.mode == "1" and img.size == (w, h) and _png_filters(data) == {0}
        np.testing.assert_array_equal(np.asarray(img.convert("L")), mask.astype(np.uint8) * 255)
        np.testing.assert_array_equal(images._fast_png_mask(data, None)[0], mask)
    with pytest.raises(ValueError, match="shape"):
        images.encode_mask_png(np.zeros((2, 2, 2), bool))


def test_damaged_pngs_go_to_pil_which_names_the_problem():
    """A bad CRC, a truncated file, a broken zlib stream, too few or too many rows: the reader
    declines, PIL decodes or refuses, and nothing crashes."""
    import struct
    import zlib

    from maskdepth.data import images

    mask = _blobs(np.random.default_rng(2), 24, 24)
    good = images.encode_mask_png(mask)
    assert images.png_rows(good) is not None

    def rebuild(rows: bytes, height: int = 24, bits: int = 1, crc_ok: bool = True) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            crc = zlib.crc32(kind + body) ^ (0 if crc_ok else 1)
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
        header = struct.pack(">IIBBBBB", 24, height, bits, 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")

    packed = np.zeros((24, 4), np.uint8)
    packed[:, 1:] = np.packbits(mask, axis=1)
    stream = zlib.compress(packed.tobytes())
    assert images.png_rows(rebuild(stream)) is not None
    flipped = bytearray(good)
    flipped[60] ^= 0x40
    cases = {
        "bad crc": rebuild(stream, crc_ok=False),
        "flipped byte": bytes(flipped),
        "truncated": good[:-20],
        "broken zlib": rebuild(stream[:10] + b"\0" * 8 + stream[18:]),
        "too few rows": rebuild(zlib.compress(packed[:20].tobytes())),
        "too many rows": rebuild(zlib.compress(np.vstack([packed, packed[:2]]).tobytes())),
        "4-bit": rebuild(stream, bits=4),
    }
    for name, data in cases.items():
        assert images.png_rows(data) is None, name
        try:
            decoded, _ = images.decode_mask_binary(data, 24)
        except DataError as exc:
            assert "image" in str(exc), name  # PIL's reason, as an ImageError
        else:
            assert decoded.shape == (24, 24), name  # PIL could still read it (e.g. a 4-bit PNG)
    # random damage: the reader declines or reads, it never raises
    rng = np.random.default_rng(3)
    for _ in range(300):
        damaged = bytearray(good)
        for pos in rng.integers(8, len(good), size=int(rng.integers(1, 4))):
            damaged[pos] = int(rng.integers(0, 256))
        rows = images.png_rows(bytes(damaged[: int(rng.integers(len(good) - 8, len(good) + 1))]))
        assert rows is None or rows[0].shape == (24, 3)


def test_unit_conversion_is_exact_at_the_ends_and_within_an_ulp():
    from maskdepth.data.dataset import to_unit

    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = np.empty((16, 16), np.float32)
    to_unit(values, out, 255.0)
    quotient = values.astype(np.float64) / 255
    assert out[0, 0] == 0.0 and out[-1, -1] == 1.0 and out.max() == 1.0
    assert np.abs(out - quotient).max() <= np.spacing(np.float32(1.0))
    depth = np.linspace(0.1, 1.0, 256, dtype=np.float32).reshape(16, 16)
    to_unit(depth, out, 1.0)  # 16-bit and float maps arrive divided already
    np.testing.assert_array_equal(out, depth)
