"""What every benchmark shares: the repository's paths, the provenance a data file starts with
(`meta`: date, command, machine, torch version), writing the figures to docs/results/<name>.json,
a progress line, a matplotlib figure stored as a small PNG, and the environment in which a
benchmark starts another one (or itself) as a module.

Benchmarks write data, never markdown: `python benchmarks/render.py` turns the data files into
the tables of docs/results.md, whose prose a person writes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


def machine() -> dict[str, Any]:
    """CPU model, core count, RAM and the GPU, if torch sees one."""
    cpu = platform.processor() or platform.machine()
    ram_gb = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            ram_gb = round(int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count(), "ram_gb": ram_gb, "arch": platform.machine()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def meta(benchmark: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    """The provenance of one run: what ran (`python -m benchmarks.NAME ARGS`), when, where, with
    which torch; `extra` adds the run's own settings (budgets, load average...)."""
    import torch

    return {
        "benchmark": benchmark,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", f"benchmarks.{benchmark}", *argv]),
        "machine": machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        # 1, 5 and 15 minute load averages when the figures were written: on a shared machine
        # other jobs slow a benchmark down (a load near the core count or above: read ratios)
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        **extra,
    }


def write_results(path: Path, run_meta: dict[str, Any], figures: dict[str, Any]) -> Path:
    """docs/results/<name>.json (or `path`): {"meta": run_meta, **figures}, written atomically."""
    from maskdepth.fileio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, to_json({"meta": run_meta, **figures}))
    log(f"wrote {shown(path)}; python benchmarks/render.py puts its tables into docs/results.md")
    return path


def _plain(value: Any, depth: int = 1) -> bool:
    """A value, or (once nested) a list of values, that fits on a row's line."""
    return not isinstance(value, (dict, list)) or (depth > 0 and isinstance(value, list)
                                                   and all(_plain(v, 0) for v in value))


def to_json(value: Any, indent: str = "") -> str:
    """JSON with one line per row: a dict or list of plain values stays on one line (if short), so
    that a rerun's diff shows which rows changed."""
    flat = json.dumps(value, ensure_ascii=False, default=str)
    end = "" if indent else "\n"
    if not isinstance(value, (dict, list)):
        return flat + end
    if all(_plain(v) for v in (value.values() if isinstance(value, dict) else value)) and len(flat) <= 300:
        return flat + end
    inner = indent + " "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {to_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" + end
    return "[\n" + ",\n".join(inner + to_json(v, inner) for v in value) + "\n" + indent + "]" + end


def rounded(value: float | None, digits: int) -> float | None:
    """A figure as a data file stores it: rounded to what it means (None stays None)."""
    return None if value is None else round(float(value), digits) + 0.0  # + 0.0: no -0.0


def log(message: str, who: str = "") -> None:
    """One progress line on stdout: `[who HH:MM:SS] message`."""
    print(f"[{who + ' ' if who else ''}{time.strftime('%H:%M:%S')}] {message}", flush=True)


def shown(path: Path) -> str:
    """A path relative to the repository when inside it."""
    try:
        return Path(path).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return Path(path).as_posix()


def module_env() -> dict[str, str]:
    """os.environ with the repository first on PYTHONPATH: a child `python -m benchmarks.X` then
    finds this package from any working directory."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def save_png(fig: Any, path: Path) -> Path:
    """Render a matplotlib Figure and store it as a palette PNG (a fraction of the RGB size)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
