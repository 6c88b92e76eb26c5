"""python -m benchmarks.full_size_job [--out-dir /work/bigdata/full_size_job] [--reuse]
       [--size 192] [--num-bg 1000] [--num-fg 100] [--per-pair 2] [--workers 2]
       [--loader-samples 20000] [--loader-workers 2] [--batch-size 32] [--steps STEP ...]
       [--out docs/results/full_size_job.json] [--from-json JSON ...] [--command TEXT]

The full-size job, once, step by step, each step in its own process (issue 13, section 4):

  make-data     `maskdepth make-data` (defaults: 1,000 x 100 x 2 x 2 = 400,000 samples at 192 px)
  check-data    `maskdepth check-data` over every sample
  open memory   `open_dataset(in_memory=True)`: read the zip into RAM and index it
  open mmap     `open_dataset(in_memory=False)`: memory-map it and index it
  twice memory  the notebook's pattern: open (section 1, 64 px), iterate a few batches through a
                DataLoader with the loader's workers, drop it; open again (section 2, full size),
                iterate; same for mmap ("twice mmap")
  loader memory one pass over `--loader-samples` shuffled samples, uint8 batches as training loads
                them, `--loader-workers` DataLoader workers; same for mmap ("loader mmap")

Per step: wall seconds of the process (imports included), CPU seconds (user + system of it and
its waited-for children: what a busy machine changes least), the seconds of the work itself where
the step reports them, and memory: the peak RSS of the step's largest single process (wait4's
ru_maxrss, exact), and the peak over the step of the whole process tree (DataLoader workers,
make-data's pool), sampled from /proc/PID/smaps_rollup every 0.2 s, or less often where a sample
costs more than 10% of one core (reading smaps_rollup walks the page tables: ~15 ms per GB
mapped): the sum of RSS (counts pages that forked workers share, or that several processes map,
once per process), the sum of PSS (each shared page split between the processes that map it:
what the tree really holds) and the sum of Pss_Anon ("anon": private memory only; RSS and PSS
include mapped file pages, which the kernel can drop under pressure).

The steps write logs to OUT_DIR/logs/ and their raw record to OUT_DIR/full_size_job.json, then
the figures to `--out` (docs/results/full_size_job.json: the steps, what each step reported, the
README's estimates against the measurement, what it means for Colab), which `python
benchmarks/render.py` turns into tables of docs/results.md. `--reuse` skips make-data when the
archive exists; `--steps` runs only the steps named. `--from-json` writes `--out` from earlier
runs' raw records without running anything (a later record's steps replace the same steps of an
earlier one):

    python -m benchmarks.full_size_job      # the full job: ~1 h on a busy 2-core machine
    python -m benchmarks.full_size_job --from-json /work/bigdata/full_size_job/full_size_job.json \
        --command "python -m benchmarks.full_size_job"

`--size 32 --num-bg 4 --num-fg 2 --per-pair 1` makes a 16-sample job (tests/test_full_size_job.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, meta, module_env, rounded, write_results

SAMPLE_S = 0.2  # the shortest interval between two samples of the tree's memory
SAMPLER_SHARE = 0.1  # at most this share of one core for sampling (smaps_rollup walks the page tables:
                     # ~15 ms per GB mapped, so a 6 GB archive in 3 processes costs ~0.3 s a sample)


@dataclass
class Step:
    """One measured step: its command, seconds and memory (MB)."""

    name: str
    status: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0         # user + system seconds of the step's processes (waited-for children included)
    work_s: float | None = None
    self_peak_mb: float = 0.0  # ru_maxrss of the step's largest process
    tree_rss_mb: float = 0.0   # peak of sum(Rss) over the tree (smaps_rollup)
    tree_pss_mb: float = 0.0   # peak of sum(Pss) over the tree
    tree_anon_mb: float = 0.0  # peak of sum(Pss_Anon): private memory, never page cache
    processes: int = 1
    load: float = 0.0          # 1 min load average when the step started
    result: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- measuring a process tree

def _descendants(root: int) -> list[int]:
    """`root` and every process below it (one scan of /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += frontier
    return tree


def _memory_kb(pid: int) -> tuple[int, int, int]:
    """(Rss, Pss, Pss_Anon) of one process in kB; zeros if it is gone."""
    values = {"Rss:": 0, "Pss:": 0, "Pss_Anon:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(" ")
                if key in values:
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values["Rss:"], values["Pss:"], values["Pss_Anon:"]


def run_step(name: str, cmd: list[str], log_dir: Path) -> Step:
    """Run `cmd`, sampling its process tree's memory until it exits; the last JSON line it prints
    to stdout becomes `Step.result` (and its "seconds" `Step.work_s`)."""
    step = Step(name)
    log = log_dir / f"{name.replace(' ', '_')}.log"
    env = dict(module_env(), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            t_sample = time.perf_counter()
            tree = _descendants(proc.pid)
            mem = [_memory_kb(p) for p in tree]
            cost = time.perf_counter() - t_sample
            step.processes = max(step.processes, sum(1 for m in mem if m[0]))
            rss, pss, anon = (sum(m[i] for m in mem) / 1024 for i in range(3))
            step.tree_rss_mb, step.tree_pss_mb = max(step.tree_rss_mb, rss), max(step.tree_pss_mb, pss)
            step.tree_anon_mb = max(step.tree_anon_mb, anon)
            time.sleep(max(SAMPLE_S, cost / SAMPLER_SHARE))
    proc.returncode = step.status = os.waitstatus_to_exitcode(status)
    step.wall_s = time.perf_counter() - t0
    step.self_peak_mb = usage.ru_maxrss / 1024
    step.cpu_s = usage.ru_utime + usage.ru_stime
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            step.result = json.loads(line)
            step.work_s = step.result.get("seconds")
            break
    return step


# --------------------------------------------------------------------------- the steps that use the data API

def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _loader(dataset, workers: int, batch_size: int, seed: int = 0):
    import torch

    from maskdepth.data import collate

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       collate_fn=collate, generator=torch.Generator().manual_seed(seed))


def _iterate(dataset, workers: int, batch_size: int, samples: int) -> int:
    """Pull batches until `samples` samples (or the dataset) are through; returns the count."""
    seen = 0
    for batch in _loader(dataset, workers, batch_size):
        seen += len(batch["fg_bg"])
        if seen >= samples:
            break
    return seen


def child_open(data: str, size: int, in_memory: bool) -> dict:
    """Open the whole archive (split "all") as training does, and read one sample."""
    from maskdepth.data import open_dataset

    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    ds = open_dataset(data, size, "all", in_memory=in_memory, uint8=True)
    seconds = time.perf_counter() - t0
    opened = _status_mb("VmRSS")
    ds[0]  # one sample read (this also imports the decoders)
    archive = ds.manifest.archives[0]
    return {"seconds": seconds, "samples": len(ds), "entries": len(archive), "index_mb": archive.index_nbytes / 2**20,
            "rss_before_mb": before, "rss_open_mb": opened, "rss_mb": _status_mb("VmRSS")}


def child_twice(data: str, size: int, in_memory: bool, workers: int, batch_size: int) -> dict:
    """The notebook's sections 1 and 2: open (64 px), a few batches, drop it; open (full size) again."""
    import gc

    from maskdepth.data import open_dataset

    t0, rss = time.perf_counter(), [_status_mb("VmRSS")]
    for section_size in (min(64, size), size):
        ds = open_dataset(data, section_size, "train", in_memory=in_memory, uint8=True)
        _iterate(ds, workers, batch_size, 4 * batch_size)
        rss.append(_status_mb("VmRSS"))
        del ds
        gc.collect()
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": rss[0], "rss_after_1_mb": rss[1],
            "rss_after_2_mb": rss[2], "main_peak_mb": _status_mb("VmHWM")}


def child_loader(data: str, size: int, in_memory: bool, workers: int, batch_size: int, samples: int) -> dict:
    """One shuffled pass over `samples` training samples; samples/s from the first batch requested
    (worker start included), not counting the open."""
    from maskdepth.data import open_dataset

    ds = open_dataset(data, size, "train", in_memory=in_memory, uint8=True)
    t0 = time.perf_counter()
    seen = _iterate(ds, workers, batch_size, samples)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples": seen, "samples_per_s": seen / seconds, "main_peak_mb": _status_mb("VmHWM")}


# --------------------------------------------------------------------------- the job

def _python(*args: object) -> list[str]:
    return [sys.executable, *map(str, args)]


def plan(args: argparse.Namespace, data: Path) -> list[tuple[str, list[str]]]:
    """(name, command) of every step, in order."""
    def me(*a: object) -> list[str]:
        return _python("-m", "benchmarks.full_size_job", "--child", *a, "--data", data, "--size", args.size)

    steps = []
    if not (args.reuse and data.exists()):
        steps.append(("make-data", _python("-m", "maskdepth", "make-data", data, "--size", args.size, "--num-bg",
                                           args.num_bg, "--num-fg", args.num_fg, "--per-pair", args.per_pair,
                                           "--workers", args.workers, "--seed", 0, "--overwrite", "--quiet")))
    steps.append(("check-data", _python("-m", "maskdepth", "check-data", data, "--quiet")))
    loader = ("--loader-workers", args.loader_workers, "--batch-size", args.batch_size)
    for mode in ("memory", "mmap"):
        steps.append((f"open {mode}", me("open", "--mode", mode)))
    for mode in ("memory", "mmap"):
        steps.append((f"twice {mode}", me("twice", "--mode", mode, *loader)))
    for mode in ("memory", "mmap"):
        steps.append((f"loader {mode}", me("loader", "--mode", mode, *loader, "--samples", args.loader_samples)))
    return [(name, cmd) for name, cmd in steps if not args.steps or name.replace(" ", "-") in args.steps]


def machine() -> dict:
    """Cores, RAM and load of this machine (shared: the load says how much else ran)."""
    with open("/proc/meminfo") as f:
        mem = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return {"nproc": os.cpu_count(), "ram_gb": mem["MemTotal"] / 2**20,
            "available_gb": mem["MemAvailable"] / 2**20, "load": os.getloadavg()}


def console(steps: list[Step]) -> str:
    """The steps as a plain-text table for the terminal."""
    lines = [f"{'step':<14} {'s':>9} {'CPU s':>9} {'work s':>8} {'peak MB':>8} {'tree RSS':>9} {'tree PSS':>9} "
             f"{'tree anon':>9} {'procs':>5} {'load':>5} {'status':>6}"]
    for s in steps:
        work = "" if s.work_s is None else f"{s.work_s:.2f}"
        lines.append(f"{s.name:<14} {s.wall_s:>9.1f} {s.cpu_s:>9.1f} {work:>8} {s.self_peak_mb:>8.0f} "
                     f"{s.tree_rss_mb:>9.0f} {s.tree_pss_mb:>9.0f} {s.tree_anon_mb:>9.0f} {s.processes:>5} "
                     f"{s.load:>5.1f} {s.status:>6}")
    return "\n".join(lines)


# The README's figures before this job was first run (README.md, "Data pipeline" and "Dataset
# generation"; benchmarks/make_data.py and benchmarks/data.py extrapolated them from small runs).
README = {"make_data_min": 10, "archive_gb": 6.0, "make_data_main_mb": 1100, "make_data_worker_mb": 115,
          "open_s": 2.6, "index_mb": 57, "loader_per_s": 1924}
COLAB = {"ram_gb": 12.7, "archive_gb": 6.0}


def step_row(step: Step) -> dict[str, Any]:
    """A step's measurements as the data file keeps them (its own report apart: `reported`)."""
    memory = {k: rounded(getattr(step, k), 0) for k in ("self_peak_mb", "tree_rss_mb", "tree_pss_mb", "tree_anon_mb")}
    return {"name": step.name, "status": step.status, "wall_s": rounded(step.wall_s, 1),
            "cpu_s": rounded(step.cpu_s, 1), "work_s": rounded(step.work_s, 2), **memory,
            "processes": step.processes, "load": rounded(step.load, 2)}


def reported(steps: list[Step], kind: str) -> list[dict[str, Any]]:
    """What the steps named `kind ...` (open, twice, loader) printed of themselves."""
    return [{"name": s.name, **{k: rounded(v, 2) if isinstance(v, float) else v for k, v in s.result.items()}}
            for s in steps if s.name.startswith(kind + " ")]


def estimates(steps: list[Step], info: dict) -> list[dict[str, Any]]:
    """The README's estimates next to what this run measured (rows for the steps that ran)."""
    by = {s.name: s for s in steps}
    a = info.get("args", {})
    rows = []
    if "make-data" in by:
        md, workers = by["make-data"], a.get("workers", 2)
        rows += [
            {"figure": f"make-data, {workers} processes: wall min", "readme": README["make_data_min"],
             "measured": rounded(md.wall_s / 60, 1)},
            {"figure": "make-data: CPU min", "measured": rounded(md.cpu_s / 60, 1)},
            {"figure": f"make-data: min on {workers} idle cores (CPU min / {workers})",
             "readme": README["make_data_min"], "measured": rounded(md.cpu_s / 60 / workers, 1)},
            {"figure": "make-data: largest process MB", "readme": README["make_data_main_mb"],
             "measured": rounded(md.self_peak_mb, 0)},
            {"figure": f"make-data: tree MB (PSS; README: main + {workers} x "
                       f"{README['make_data_worker_mb']} per worker)",
             "readme": README["make_data_main_mb"] + workers * README["make_data_worker_mb"],
             "measured": rounded(md.tree_pss_mb, 0)}]
    rows.append({"figure": "archive GB", "readme": README["archive_gb"],
                 "measured": rounded(info["archive_bytes"] / 1e9, 2)})
    for mode in ("mmap", "memory"):
        if f"open {mode}" in by:
            r = by[f"open {mode}"].result
            rows.append({"figure": f"open_dataset, {mode} ({r['entries']:,} entries), s", "readme": README["open_s"],
                         "measured": rounded(r["seconds"], 1)})
    opened = next((by[f"open {m}"].result for m in ("mmap", "memory") if f"open {m}" in by), None)
    if opened:
        rows.append({"figure": "index MB", "readme": README["index_mb"], "measured": rounded(opened["index_mb"], 0)})
    for mode in ("memory", "mmap"):
        if f"loader {mode}" in by:
            rows.append({"figure": f"loader, {a.get('loader_workers', 2)} workers, uint8, {a.get('size', 192)} px, "
                                   f"batch {a.get('batch_size', 32)}, {mode}: samples/s",
                         "readme": README["loader_per_s"],
                         "measured": rounded(by[f"loader {mode}"].result["samples_per_s"], 0)})
    return rows


def colab(steps: list[Step], info: dict) -> list[dict[str, Any]]:
    """What the open-twice steps say about a 12.7 GB runtime with a 6 GB archive: the private memory
    beyond the archive itself is carried over as measured, the archive scaled to COLAB's size."""
    measured_gb = info["archive_bytes"] / 1e9
    rows = []
    for mode in ("memory", "mmap"):
        step = next((s for s in steps if s.name == f"twice {mode}"), None)
        if step is None or not measured_gb:
            continue
        anon = step.tree_anon_mb * 2**20 / 1e9
        held = measured_gb if mode == "memory" else 0.0  # the archive's bytes in private memory
        rows.append({"in_memory": mode == "memory", "workers": step.processes - 1, "private_gb": rounded(anon, 2),
                     "pss_gb": rounded(step.tree_pss_mb * 2**20 / 1e9, 2), "archive_gb": rounded(measured_gb, 2),
                     "need_gb": rounded(anon - held + (COLAB["archive_gb"] if mode == "memory" else 0.0), 2),
                     "overhead_gb": rounded(anon - held, 2)})
    return rows


def figures(steps: list[Step], info: dict) -> dict[str, Any]:
    """Everything docs/results/full_size_job.json holds besides its meta."""
    m, after = info["machine_before"], info["machine_after"]
    run = {"archive": info["archive"], "archive_gb": rounded(info["archive_bytes"] / 1e9, 2),
           "disk_gb": rounded(info["disk_bytes"] / 1e9, 2), "nproc": m["nproc"], "ram_gb": rounded(m["ram_gb"], 1),
           "available_gb": rounded(m["available_gb"], 1), "load_1": rounded(m["load"][0], 2),
           "load_5": rounded(m["load"][1], 2), "load_15": rounded(m["load"][2], 2),
           "load_end": rounded(after["load"][0], 2), "total_min": rounded(sum(s.wall_s for s in steps) / 60, 1)}
    return {"run": run, "steps": [step_row(s) for s in steps], "open": reported(steps, "open"),
            "twice": reported(steps, "twice"), "loader": reported(steps, "loader"), "readme_estimates": README,
            "estimates": estimates(steps, info), "colab_settings": COLAB, "colab": colab(steps, info)}


def run_job(args: argparse.Namespace, argv: list[str]) -> tuple[list[Step], dict]:
    out_dir = Path(args.out_dir)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    data = out_dir / f"synth{args.size}.zip"
    info = {"machine_before": machine(), "archive": str(data),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
            "command": shlex.join(["python", "-m", "benchmarks.full_size_job", *argv])}
    steps = []
    for name, cmd in plan(args, data):
        load = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
        step = run_step(name, cmd, out_dir / "logs")
        step.load = load
        print(f"    {step.wall_s:.1f} s, status {step.status}, {json.dumps(step.result)}", flush=True)
        steps.append(step)
    info["machine_after"] = machine()
    info["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info["archive_bytes"] = data.stat().st_size if data.exists() else 0
    info["disk_bytes"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    record = {**info, "steps": [asdict(s) for s in steps]}
    (out_dir / "full_size_job.json").write_text(json.dumps(record, indent=1, default=str))
    return steps, info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/work/bigdata/full_size_job",
                        help="the archive, the logs, the raw record")
    parser.add_argument("--reuse", action="store_true", help="skip make-data if the archive exists")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--num-bg", type=int, default=1000)
    parser.add_argument("--num-fg", type=int, default=100)
    parser.add_argument("--per-pair", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="make-data processes")
    parser.add_argument("--loader-samples", type=int, default=20_000)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", nargs="+", metavar="STEP", help="run only these steps: make-data check-data "
                        "open-memory open-mmap twice-memory twice-mmap loader-memory loader-mmap (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "full_size_job.json",
                        help="the data file (default %(default)s)")
    parser.add_argument("--from-json", nargs="+", metavar="JSON", help="write --out from earlier runs' raw records "
                        "(OUT_DIR/full_size_job.json; a later file's steps replace the same steps of an earlier "
                        "one), run nothing")
    parser.add_argument("--command", help="the command to name in the data file (default: the one that ran)")
    parser.add_argument("--child", choices=["open", "twice", "loader"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["memory", "mmap"], help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        in_memory = args.mode == "memory"
        if args.child == "open":
            result = child_open(args.data, args.size, in_memory)
        elif args.child == "twice":
            result = child_twice(args.data, args.size, in_memory, args.loader_workers, args.batch_size)
        else:
            result = child_loader(args.data, args.size, in_memory, args.loader_workers, args.batch_size, args.samples)
        print(json.dumps(result))
        return 0

    steps, info = load_runs(args.from_json) if args.from_json else run_job(args, argv)
    m = info["machine_before"]
    print(f"\n{m['nproc']} cores, {m['ram_gb']:.1f} GB RAM ({m['available_gb']:.1f} GB available at the start), "
          f"load {m['load'][0]:.2f} {m['load'][1]:.2f} {m['load'][2]:.2f} at the start, "
          f"{info['machine_after']['load'][0]:.2f} at the end; archive {info['archive_bytes'] / 1e9:.2f} GB, "
          f"{info['disk_bytes'] / 1e9:.2f} GB on disk in {info['archive'].rsplit('/', 1)[0]}")
    print(console(steps))
    run_meta = meta("full_size_job", argv, args=info.get("args", {}))
    run_meta.update(date=info["date"], finished=info.get("finished"),
                    command=args.command or info.get("command", run_meta["command"]))
    write_results(args.out, run_meta, figures(steps, info))
    return max(s.status for s in steps)


def load_runs(paths: list[str]) -> tuple[list[Step], dict]:
    """Steps and machine of earlier runs (their raw records): the first run's info; a step that a
    later run measured again (e.g. `--reuse --steps check-data`) is replaced by its later row."""
    steps: dict[str, Step] = {}
    info: dict = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        saved.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.stat(path).st_mtime)))
        for s in saved.pop("steps"):
            s.setdefault("load", s.get("result", {}).pop("load", 0.0))  # records before issue 23 kept it there
            steps[s["name"]] = Step(**s)
        info = info or saved
        info["machine_after"] = saved["machine_after"]
        info["finished"] = saved.get("finished")
    return list(steps.values()), info


if __name__ == "__main__":
    sys.exit(main())
