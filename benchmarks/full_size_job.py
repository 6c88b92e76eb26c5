"""python scripts/full_size_job.py [--out-dir /work/bigdata/full_size_job] [--reuse] [--markdown]
       [--size 192] [--num-bg 1000] [--num-fg 100] [--per-pair 2] [--workers 2]
       [--loader-samples 20000] [--loader-workers 2] [--batch-size 32] [--steps STEP ...]
       [--out docs/results.md] [--from-json JSON ...] [--command TEXT]

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

The steps write logs to OUT_DIR/logs/ and the figures to OUT_DIR/full_size_job.json. `--reuse`
skips make-data when the archive exists; `--steps` runs only the steps named. `--markdown` prints
the table; `--out docs/results.md` writes the report (table, the README's estimates against the
measurement, what it means for Colab) between its markers there, and `--from-json` renders it
from earlier runs without running anything:

    PYTHONPATH=src python scripts/full_size_job.py --markdown      # the full job: ~1 h on a busy 2-core machine
    python scripts/full_size_job.py --from-json /work/bigdata/full_size_job/full_size_job.json \
        --out docs/results.md --command "python scripts/full_size_job.py --markdown"

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
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
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
    env = dict(os.environ, PYTHONUNBUFFERED="1")
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
            for attr, i in (("tree_rss_mb", 0), ("tree_pss_mb", 1), ("tree_anon_mb", 2)):
                setattr(step, attr, max(getattr(step, attr), sum(m[i] for m in mem) / 1024))
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
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": rss[0], "rss_after_1_mb": rss[1], "rss_after_2_mb": rss[2],
            "main_peak_mb": _status_mb("VmHWM")}


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
    me = lambda *a: _python(HERE, "--child", *a, "--data", data, "--size", args.size)  # noqa: E731
    steps = []
    if not (args.reuse and data.exists()):
        steps.append(("make-data", _python("-m", "maskdepth", "make-data", data, "--size", args.size,
                                           "--num-bg", args.num_bg, "--num-fg", args.num_fg, "--per-pair", args.per_pair,
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


def note(step: Step) -> str:
    """The step's own figures, in a few words."""
    r = step.result
    if "samples_per_s" in r:
        return f"{r['samples']:,} samples, {r['samples_per_s']:,.0f} samples/s"
    if "entries" in r:
        return (f"{r['samples']:,} samples, {r['entries']:,} entries, index {r['index_mb']:.0f} MB, "
                f"RSS {r['rss_before_mb']:,.0f} MB before the open (imports), {r.get('rss_open_mb', 0):,.0f} MB after it, "
                f"{r['rss_mb']:,.0f} MB after one sample")
    if "rss_after_1_mb" in r:
        return (f"main RSS {r['rss_before_mb']:,.0f} MB before, {r['rss_after_1_mb']:,.0f} MB after section 1, "
                f"{r['rss_after_2_mb']:,.0f} MB after section 2, peak {r['main_peak_mb']:,.0f} MB")
    return "" if step.status == 0 else f"exit status {step.status}"


def table(steps: list[Step]) -> list[str]:
    """Markdown rows: one per step."""
    rows = ["| step | s | CPU s | work s | largest process peak MB | tree RSS peak MB | tree PSS peak MB | "
            "tree anon peak MB | processes | load | notes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in steps:
        work = "" if s.work_s is None else f"{s.work_s:,.2f}"
        rows.append(f"| {s.name} | {s.wall_s:,.1f} | {s.cpu_s:,.1f} | {work} | {s.self_peak_mb:,.0f} | {s.tree_rss_mb:,.0f} | "
                    f"{s.tree_pss_mb:,.0f} | {s.tree_anon_mb:,.0f} | {s.processes} | {s.result.get('load', 0):.1f} | {note(s)} |")
    return rows


# The README's figures before this job was first run (README.md, "Data pipeline" and "Dataset
# generation"; scripts/bench_make_data.py and bench_data.py extrapolated them from small runs).
README = {"make_data_min": 10, "archive_gb": 6.0, "make_data_main_mb": 1100, "make_data_worker_mb": 115,
          "open_s": 2.6, "index_mb": 57, "loader_per_s": 1924}
BEGIN, END = "<!-- fullsize:begin -->", "<!-- fullsize:end -->"
NOTES = "<!-- fullsize:notes (kept by reruns) -->"
COLAB_GB = 12.7


def estimates(steps: list[Step], info: dict) -> list[str]:
    """The README's estimates next to what this run measured (rows for the steps that ran)."""
    by = {s.name: s for s in steps}
    rows = ["| figure | README (before this run) | measured |", "|---|---|---|"]
    if "make-data" in by:
        md = by["make-data"]
        rows += [f"| make-data, 2 processes | ~{README['make_data_min']} min on 2 cores | {md.wall_s / 60:.1f} min wall on the "
                 f"busy machine; {md.cpu_s / 60:.1f} CPU min, i.e. ~{md.cpu_s / 120:.1f} min on 2 idle cores |",
                 f"| make-data memory | main ~{README['make_data_main_mb']:,} MB + ~{README['make_data_worker_mb']} MB "
                 f"per worker | largest process {md.self_peak_mb:,.0f} MB, tree {md.tree_pss_mb:,.0f} MB (PSS) |"]
    rows.append(f"| archive | {README['archive_gb']:.1f} GB | {info['archive_bytes'] / 1e9:.2f} GB |")
    for mode in ("mmap", "memory"):
        if f"open {mode}" in by:
            r = by[f"open {mode}"].result
            rows.append(f"| open_dataset, {mode} ({r['entries']:,} entries) | {README['open_s']} s, index {README['index_mb']} MB "
                        f"(an archive of empty entries) | {r['seconds']:.1f} s, index {r['index_mb']:.0f} MB |")
    a = info.get("args", {})
    for mode in ("memory", "mmap"):
        if f"loader {mode}" in by:
            r = by[f"loader {mode}"].result
            rows.append(f"| loader, {a.get('loader_workers', 2)} workers, uint8, {a.get('size', 192)} px, batch "
                        f"{a.get('batch_size', 32)}, {mode} | 2 workers, 192 px: {README['loader_per_s']:,} samples/s (400 samples, "
                        f"an idle machine) | {r['samples_per_s']:,.0f} samples/s over {r['samples']:,} samples |")
    return rows


def colab(steps: list[Step], info: dict, archive_gb: float = 6.0) -> list[str]:
    """What the open-twice steps say about a 12.7 GB runtime with a 6 GB archive: the private memory
    beyond the archive itself is carried over as measured, the archive scaled to `archive_gb`."""
    measured_gb = info["archive_bytes"] / 1e9
    lines = []
    for mode in ("memory", "mmap"):
        step = next((s for s in steps if s.name == f"twice {mode}"), None)
        if step is None or not measured_gb:
            continue
        anon = step.tree_anon_mb * 2**20 / 1e9
        held = measured_gb if mode == "memory" else 0.0  # the archive's bytes in private memory
        need = anon - held + (archive_gb if mode == "memory" else 0.0)
        lines.append(f"- `in_memory={mode == 'memory'}`: opened twice (DataLoader workers: {step.processes - 1}), the "
                     f"process tree held at most {anon:.1f} GB of private memory (PSS {step.tree_pss_mb * 2**20 / 1e9:.1f} GB, "
                     f"file pages included) for this {measured_gb:.2f} GB archive. With a {archive_gb:.0f} GB archive that is "
                     f"~{need:.1f} GB private of the {COLAB_GB} GB ({'the archive once, plus ' if held else ''}"
                     f"{anon - held:.1f} GB for Python, torch, the index and the workers).")
    return lines


def report(steps: list[Step], info: dict, command: str) -> str:
    """The docs/results.md block: what ran, where, the table, the README's estimates, Colab."""
    m, after = info["machine_before"], info["machine_after"]
    total = sum(s.wall_s for s in steps)
    return "\n".join([
        BEGIN, "## The full-size job (issue 13)", "",
        f"Measured {info.get('date', '?')} by `{command}` ({total / 60:.0f} min in all), each step in a process of its own. "
        f"Machine: {m['nproc']} cores (`nproc`), {m['ram_gb']:.1f} GB RAM ({m['available_gb']:.1f} GB available at the start), "
        f"load average {m['load'][0]:.1f} / {m['load'][1]:.1f} / {m['load'][2]:.1f} (1 / 5 / 15 min) at the start and "
        f"{after['load'][0]:.1f} at the end. **The machine was shared** with other jobs (test suites of other sessions), "
        "so the wall-clock seconds are those of a busy machine; CPU seconds change less with the load.", "",
        f"Archive: `{info['archive']}`, {info['archive_bytes'] / 1e9:.2f} GB; {info['disk_bytes'] / 1e9:.2f} GB on disk "
        "in the job's folder.", "",
        *table(steps), "",
        "s: wall-clock seconds of the step's process, from its start (imports included) to its exit; CPU s: user + system "
        "seconds of it and its waited-for children; work s: the step's own timing of its work (the open alone; both "
        "sections; the loader pass from the first batch requested, worker start included); largest process peak: "
        "ru_maxrss of the biggest single process; tree RSS / PSS / anon: the peak over the step of the sums over "
        "the process tree (DataLoader workers, make-data's pool), sampled from /proc/PID/smaps_rollup. RSS counts a "
        "page shared by forked workers, or mapped by several, once per process; PSS splits it among them; anon "
        "(Pss_Anon) is private memory only, without the file pages of a memory map, which the kernel can drop under "
        "pressure. The load column is the 1 min load average when the step started.", "",
        "### Against the README's estimates", "", *estimates(steps, info), "",
        f"### Colab: {COLAB_GB} GB of RAM, a 6 GB archive opened twice (section 1, then section 2)", "",
        *colab(steps, info), "",
        END])
def run_job(args: argparse.Namespace) -> tuple[list[Step], dict]:
    out_dir = Path(args.out_dir)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    data = out_dir / f"synth{args.size}.zip"
    info = {"machine_before": machine(), "archive": str(data), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "args": vars(args), "command": "python scripts/full_size_job.py " + shlex.join(sys.argv[1:])}
    steps = []
    for name, cmd in plan(args, data):
        load = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
        step = run_step(name, cmd, out_dir / "logs")
        step.result["load"] = load
        print(f"    {step.wall_s:.1f} s, status {step.status}, {note(step)}", flush=True)
        steps.append(step)
    info["machine_after"] = machine()
    info["archive_bytes"] = data.stat().st_size if data.exists() else 0
    info["disk_bytes"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    (out_dir / "full_size_job.json").write_text(json.dumps({**info, "steps": [s.__dict__ for s in steps]}, indent=1))
    return steps, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/work/bigdata/full_size_job")
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
    parser.add_argument("--markdown", action="store_true", help="print the table for docs/results.md")
    parser.add_argument("--out", help="write the report into this markdown file (docs/results.md), between "
                        "<!-- fullsize:begin --> and <!-- fullsize:end -->; text after a line <!-- fullsize:notes (kept by reruns) --> "
                        "inside the block is kept")
    parser.add_argument("--from-json", nargs="+", metavar="JSON", help="render the report of earlier runs "
                        "(OUT_DIR/full_size_job.json; a later file's steps replace the same steps of an earlier one), run nothing")
    parser.add_argument("--command", help="the command to name in the report (default: this one)")
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

    if args.from_json:
        steps, info = load_runs(args.from_json)
    else:
        steps, info = run_job(args)
    m = info["machine_before"]
    print(f"\n{m['nproc']} cores, {m['ram_gb']:.1f} GB RAM ({m['available_gb']:.1f} GB available at the start), "
          f"load {m['load'][0]:.2f} {m['load'][1]:.2f} {m['load'][2]:.2f} at the start, "
          f"{info['machine_after']['load'][0]:.2f} at the end; archive {info['archive_bytes'] / 1e9:.2f} GB, "
          f"{info['disk_bytes'] / 1e9:.2f} GB on disk in {info['archive'].rsplit('/', 1)[0]}")
    if args.markdown:
        print("\n".join(table(steps)))
    if args.out:
        write_block(Path(args.out), report(steps, info, args.command or info.get("command", "python scripts/full_size_job.py")))
    return max(s.status for s in steps)


def load_runs(paths: list[str]) -> tuple[list[Step], dict]:
    """Steps and machine of earlier runs (full_size_job.json): the first run's info; a step that a
    later run measured again (e.g. `--reuse --steps check-data`) is replaced by its later row."""
    steps: dict[str, Step] = {}
    info: dict = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        saved.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.stat(path).st_mtime)))
        for s in saved.pop("steps"):
            steps[s["name"]] = Step(**s)
        info = info or saved
        info["machine_after"] = saved["machine_after"]
    return list(steps.values()), info


def write_block(path: Path, block: str) -> None:
    """Replace the block between BEGIN and END in `path`, or append it."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        old, tail = rest.split(END, 1)
        if NOTES in old:  # hand-written notes at the end of the block survive a rerun
            block = block.replace(END, NOTES + old.split(NOTES, 1)[1] + END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
