"""Helpers shared by the report scripts (benchmark.py, bench_quality.py, bench_gpu.py): markdown
tables and cells, marked blocks of a report, pictures, logging, loading a sibling script.

Not a script itself. scripts/ is not a package, so a script imports this module after putting its
own folder on sys.path:

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mdreport
"""

from __future__ import annotations

import importlib.util
import io
import math
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
# scripts/bench_quality.py owns the block of docs/results.md between these markers
QUALITY_BEGIN, QUALITY_END = "<!-- quality:begin -->", "<!-- quality:end -->"


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py as a module, once per process (scripts/ is not a package)."""
    module_name = f"_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def log(message: str, who: str = "") -> None:
    """One progress line on stdout: `[who HH:MM:SS] message`."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{who + ' ' if who else ''}{stamp}] {message}", flush=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: a finite float with `digits` decimals, an int with thousands separators, or an
    en dash for None / NaN / inf."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def dict_table(rows: list[dict[str, Any]], known: list[tuple[str, str, int]]) -> str:
    """Rows of another script's results as a table: the `known` (key, header, decimals) columns
    first, then any other numeric key it reports under its own name (its output may grow)."""
    columns = [(k, h, d) for k, h, d in known if any(k in r for r in rows)]
    seen = {k for k, _, _ in known}
    for r in rows:
        for k, v in r.items():
            if k not in seen and isinstance(v, (int, float)) and not isinstance(v, bool):
                columns.append((k, k, 2 if isinstance(v, float) else 0))
                seen.add(k)

    def cell(v: Any, d: int) -> str:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "–" if v is None else str(v)
        return f"{v:,.0f}" if d == 0 else f"{v:.{d}f}"

    return table([h for _, h, _ in columns], [[cell(r.get(k), d) for k, _, d in columns] for r in rows])


def marked_block(text: str, begin: str, end: str) -> str | None:
    """The text between the markers `begin` and `end` (markers excluded), or None without them."""
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0]


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    """`text` with its first `begin`...`end` span (the markers and one newline right after `end`
    included) replaced by `block`, which carries its own markers and final newline. Raises
    ValueError without the markers."""
    if begin not in text or end not in text:
        raise ValueError(f"no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return head + block + tail.removeprefix("\n")


def shown(path: Path) -> str:
    """A path as a report shows it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


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
