"""python -m benchmarks.make_data [--sizes 64 192] [--workers 1 0] [--samples 320] [--out docs/results/make_data.json]

Throughput and peak memory of `maskdepth make-data`, and an estimate for the full dataset.

Each configuration (image size x workers, 0 = all cores) runs in a fresh subprocess that makes
a small archive in a temp folder (num_bg=4, num_fg=samples/(4*2*per_pair), per_pair=4) and
reports: samples/s over the whole run and over the sampling phase alone (phase 1 renders every
background and draws every object once, phase 2 composites and encodes the samples), and the
peak RSS of the main process and of the largest worker (getrusage RUSAGE_SELF / RUSAGE_CHILDREN).
The estimate for the full 400,000-sample run (make-data's defaults) adds the zip index that the
main process keeps for the central directory (measured here per entry) and an upper bound of the
rendered backgrounds it keeps (16 bytes a pixel each) to the main process's peak. Prints a table
and writes `rates` and `estimate` to `--out` (docs/results/make_data.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from benchmarks.common import RESULTS, meta, module_env, rounded, write_results

FULL = dict(num_bg=1000, num_fg=100, per_pair=2)  # make-data's defaults: 400,000 samples
# what the figures depend on (tests/test_figures.py: a newer commit of one of them marks them stale)
SOURCES = ("benchmarks/make_data.py", "src/maskdepth/synth/make.py", "src/maskdepth/synth/scene.py",
           "src/maskdepth/synth/objects.py")


def _child(size: int, workers: int, samples: int) -> dict:
    from maskdepth.synth import make_dataset

    per_pair = 4
    num_fg = max(1, samples // (4 * 2 * per_pair))
    with tempfile.TemporaryDirectory() as tmp:
        summary = make_dataset(os.path.join(tmp, "bench.zip"), size=size, num_bg=4, num_fg=num_fg,
                               per_pair=per_pair, workers=workers or None, progress=False)
    sample_seconds = summary.seconds - summary.prepare_seconds
    return {
        "size": size, "workers": workers or os.cpu_count(), "count": summary.count, "seconds": summary.seconds,
        "prepare_seconds": summary.prepare_seconds, "prepare_items": 4 + num_fg,
        "samples_per_s": summary.count / summary.seconds, "sampling_per_s": summary.count / sample_seconds,
        "bytes_per_sample": summary.bytes / summary.count,
        "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _zip_index_bytes_per_entry(n: int = 100_000) -> float:
    """RSS growth per entry of a zipfile writer, which keeps every entry's ZipInfo until close."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(os.path.join(tmp, "z.zip"), "w") as zf:
        for i in range(n):
            info = zipfile.ZipInfo(f"fg_bg/bg{i % 100:03d}_fg{i // 100 % 1000:03d}_{i % 2}_{i:06d}.jpg",
                                   date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, b"x")
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return grown * 1024 / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 0], help="0 = all cores")
    parser.add_argument("--samples", type=int, default=320, help="samples per configuration")
    parser.add_argument("--out", type=Path, default=RESULTS / "make_data.json",
                        help="the data file (default %(default)s)")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0

    print(f"{os.cpu_count()} cores; {args.samples} samples per configuration")
    print(f"{'size':>5} {'workers':>7} {'samples/s':>10} {'sampling/s':>11} {'prep s/item':>11} "
          f"{'KB/sample':>9} {'main MB':>8} {'worker MB':>9}")
    results = []
    for size in args.sizes:
        for workers in args.workers:
            child = ["--child", str(size), str(workers), str(args.samples)]
            out = subprocess.run([sys.executable, "-m", "benchmarks.make_data", *child], check=True,
                                 capture_output=True, text=True, env=module_env()).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results.append(r)
            print(f"{r['size']:>5} {r['workers']:>7} {r['samples_per_s']:>10.0f} {r['sampling_per_s']:>11.0f} "
                  f"{r['prepare_seconds'] / r['prepare_items'] * r['workers']:>11.3f} "
                  f"{r['bytes_per_sample'] / 1e3:>9.1f} {r['main_rss_mb']:>8.0f} {r['worker_rss_mb']:>9.0f}")

    per_entry = _zip_index_bytes_per_entry()
    count = FULL["num_bg"] * FULL["num_fg"] * 2 * FULL["per_pair"]
    print(f"zip index in the main process: {per_entry:.0f} bytes per entry")
    estimate = []
    for r in results:
        if r["size"] != max(args.sizes):
            continue
        prep = r["prepare_seconds"] / r["prepare_items"] * (FULL["num_bg"] + FULL["num_fg"])
        seconds = prep + count / r["sampling_per_s"]
        # The main process also keeps every rendered background for phase 2: at most 16 bytes a
        # pixel (RGB uint8, depth float32, floor bool, and an int32 index + float32 depth per floor pixel).
        backdrops_mb = FULL["num_bg"] * r["size"] ** 2 * 16 / 2**20
        main_mb = (r["main_rss_mb"] + (3 * count + FULL["num_bg"]) * per_entry / 2**20 + count * 150 / 2**20
                   + backdrops_mb)
        print(f"estimate, full {count:,}-sample {r['size']} px run with {r['workers']} workers: "
              f"{seconds / 60:.0f} min, {r['bytes_per_sample'] * count / 1e9:.1f} GB archive, main process "
              f"~{main_mb:.0f} MB + {r['workers']} workers x ~{r['worker_rss_mb']:.0f} MB peak RSS")
        estimate.append({"samples": count, "size": r["size"], "workers": r["workers"],
                         "minutes": rounded(seconds / 60, 1),
                         "archive_gb": rounded(r["bytes_per_sample"] * count / 1e9, 2), "main_mb": rounded(main_mb, 0),
                         "worker_mb": rounded(r["worker_rss_mb"], 0),
                         "rendered_scenes_mb_bound": rounded(backdrops_mb, 0)})
    rates = [{"size": r["size"], "workers": r["workers"], "count": r["count"], "seconds": rounded(r["seconds"], 2),
              "samples_per_s": rounded(r["samples_per_s"], 1), "sampling_per_s": rounded(r["sampling_per_s"], 1),
              "prepare_s_per_item": rounded(r["prepare_seconds"] / r["prepare_items"] * r["workers"], 3),
              "kb_per_sample": rounded(r["bytes_per_sample"] / 1e3, 2), "main_rss_mb": rounded(r["main_rss_mb"], 0),
              "worker_rss_mb": rounded(r["worker_rss_mb"], 0)} for r in results]
    write_results(args.out, meta("make_data", argv, full=FULL, zip_index_bytes_per_entry=rounded(per_entry, 1),
                                 sources=list(SOURCES)),
                  {"rates": rates, "estimate": estimate})
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    status = main()
    if "--child" not in sys.argv:
        print(f"(bench took {time.perf_counter() - t0:.0f} s)")
    sys.exit(status)
