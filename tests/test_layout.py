"""The layout rules of issue 23 and docs/architecture.md, read from the source (AST only: nothing is
imported, so these run in a second): function length, private names across modules, imports that
point down the architecture's stack, and the size limits of data/ and train.py."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "maskdepth"
ARCHITECTURE = REPO / "docs" / "architecture.md"

MAX_FUNCTION_LINES = 60
# the scene generator: long, straight-line drawing code that reads best in one piece
LONG_FUNCTIONS_ALLOWED_IN = ("maskdepth.synth",)


@dataclass(frozen=True)
class Module:
    name: str  # dotted: maskdepth.data.archive, benchmarks.common
    path: Path
    rel: str  # its path from the root it was found under, for messages

    @property
    def package(self) -> str:
        """The package its relative imports start from."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]

    @property
    def layer(self) -> str:
        """Its unit in the architecture's stack: the first name below maskdepth (data, model, train, ...)."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else parts[0]


def find_modules(root: Path, top: str) -> list[Module]:
    """Every .py file under root/top as a Module."""
    found = []
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append(Module(".".join(parts), path, path.relative_to(root).as_posix()))
    return found


def imports(module: Module, known: set[str]) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported, name taken from it or None) for each import anywhere in the file:
    inside functions and `if TYPE_CHECKING:` too. `from pkg import mod` counts as importing pkg.mod."""
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.package.split(".")
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield node.lineno, f"{base}.{alias.name}", None
                else:
                    yield node.lineno, base, alias.name


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_import_problems(modules: list[Module], ours: tuple[str, ...]) -> list[str]:
    """Imports of another module's `_private` names, and of a private module (`data/_buffers.py`)
    from outside the package that holds it. A module may use its own private names, and its
    package's private modules as long as it imports their public names only."""
    known = {m.name for m in modules}
    problems = []
    for module in modules:
        for line, target, name in imports(module, known):
            if target.split(".")[0] not in ours:
                continue
            where = f"{module.rel}:{line}"
            parts = target.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])  # the package that holds the private module
                if _private(part) and not (module.name == owner or module.name.startswith(owner + ".")):
                    problems.append(f"{where}: {module.name} imports the private module {target}")
            if name is not None and _private(name) and target != module.name:
                problems.append(f"{where}: {module.name} imports {name}, a private name of {target}")
    return problems


def long_functions(modules: list[Module], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods longer than `limit` lines, from `def` to their last line."""
    found = []
    for module in modules:
        if module.name.startswith(LONG_FUNCTIONS_ALLOWED_IN):
            continue
        for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{module.name}.{node.name} (line {node.lineno}): {length} lines")
    return found


def function_length(path: Path, name: str) -> int:
    """Lines of the top-level function `name` in `path`."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.end_lineno - node.lineno + 1
    raise AssertionError(f"{path} has no function {name}")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


# ------------------------------------------------------------------ the import stack


def architecture_stack(text: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The stack of "Which module may import which" in docs/architecture.md: each unit's level
    (0 = the top line) and the imports between units of one line that its arrows allow."""
    section = text.split("## Which module may import which", 1)[1]
    block = section.split("```", 2)[1]
    level: dict[str, int] = {}
    arrows: set[tuple[str, str]] = set()
    for row, line in enumerate(block.strip().splitlines()):
        spec = re.split(r"\s{3,}", line.strip(), maxsplit=1)[0]  # the units; the rest is a comment
        groups = [[unit.strip() for unit in group.split(",")] for group in spec.split("->")]
        for i, group in enumerate(groups):
            for unit in group:
                level[unit] = row
                arrows.update((unit, lower) for later in groups[i + 1 :] for lower in later)
    return level, arrows


def layer_problems(modules: list[Module], level: dict[str, int], arrows: set[tuple[str, str]]) -> list[str]:
    """Imports between units that do not point down the stack (nor along one of its arrows).
    `python -m maskdepth` (__main__) sits above the stack, the package's __init__ below it."""
    known = {m.name for m in modules}
    level = {"__main__": -1, **level, "maskdepth": len(level)}
    problems = []
    for module in modules:
        if module.layer not in level:
            problems.append(f"{module.name}: {module.layer} is not in the architecture's stack")
            continue
        for line, target, _ in imports(module, known):
            parts = target.split(".")
            if parts[0] != "maskdepth" or len(parts) < 2 or parts[1] == module.layer:
                continue
            if parts[1] not in level:
                problems.append(f"{module.name}:{line}: {target} is not in the architecture's stack")
            elif level[parts[1]] <= level[module.layer] and (module.layer, parts[1]) not in arrows:
                problems.append(f"{module.name}:{line}: {module.layer} imports {parts[1]}, which is not below it")
    return problems


# Said in words by docs/architecture.md and issue 23 beside the stack ("data knows nothing of
# training, of synth or of the model"); the stack alone would let data import the model.
FORBIDDEN = {
    "model": {"data", "synth", "train", "rundir", "evaluate"},
    "losses": {"data", "synth", "train", "rundir", "evaluate"},
    "metrics": {"data", "synth", "train", "rundir", "evaluate"},
    "data": {"train", "rundir", "evaluate", "synth", "model"},
    "synth": {"train", "model"},
}

@pytest.fixture(scope="module")
def src_modules() -> list[Module]:
    return find_modules(SRC, "maskdepth")


def test_no_function_in_src_over_60_lines_outside_synth(src_modules: list[Module]) -> None:
    assert long_functions(src_modules) == []


def test_no_module_imports_another_modules_private_names(src_modules: list[Module]) -> None:
    modules = src_modules + (find_modules(REPO, "benchmarks") if (REPO / "benchmarks").is_dir() else [])
    assert private_import_problems(modules, ours=("maskdepth", "benchmarks")) == []


def test_imports_point_down_the_stack_of_the_architecture_doc(src_modules: list[Module]) -> None:
    level, arrows = architecture_stack(ARCHITECTURE.read_text())
    assert {"model", "data", "synth", "train", "cli"} <= set(level)
    assert layer_problems(src_modules, level, arrows) == []


def test_model_losses_metrics_data_and_synth_know_nothing_above_them(src_modules: list[Module]) -> None:
    known = {m.name for m in src_modules}
    found = []
    for module in src_modules:
        for line, target, _ in imports(module, known):
            parts = target.split(".")
            if parts[0] == "maskdepth" and len(parts) > 1 and parts[1] in FORBIDDEN.get(module.layer, ()):
                found.append(f"{module.name}:{line} imports {target}")
    assert found == []


def test_only_the_cli_parses_arguments(src_modules: list[Module]) -> None:
    known = {m.name for m in src_modules}
    users = {m.name for m in src_modules for _, target, _ in imports(m, known) if target == "argparse"}
    assert users == {"maskdepth.cli"}


def test_size_limits_of_issue_23() -> None:
    data = sorted((PACKAGE / "data").rglob("*.py"))
    assert sum(lines(p) for p in data) <= 3000, {p.name: lines(p) for p in data}
    assert lines(PACKAGE / "data" / "dataset.py") < 500
    assert lines(PACKAGE / "train.py") <= 400
    for name in ("fit", "train_one_epoch"):
        assert function_length(PACKAGE / "train.py", name) <= MAX_FUNCTION_LINES, name


# ------------------------------------------------------------------ the checks themselves


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    body = "\n".join(f"    x = {i}" for i in range(MAX_FUNCTION_LINES))
    _tree(tmp_path, {
        "maskdepth/__init__.py": "",
        "maskdepth/errors.py": "_HIDDEN = 1\n",
        "maskdepth/data/__init__.py": "from maskdepth.data._buffers import batch_buffer\n",
        "maskdepth/data/_buffers.py": "def batch_buffer():\n    pass\n",
        "maskdepth/data/dataset.py": "from ._buffers import batch_buffer\nfrom . import _buffers\n",
        "maskdepth/data/archive.py": "from maskdepth.errors import _HIDDEN\nfrom maskdepth.model import build\n",
        "maskdepth/model/__init__.py": "def build():\n    from maskdepth.data import dataset\n",
        "maskdepth/train.py": f"from maskdepth.data._buffers import batch_buffer\n\ndef fit():\n{body}\n",
        "maskdepth/synth/make.py": f"def render():\n{body}\n",
    })
    modules = find_modules(tmp_path, "maskdepth")
    assert private_import_problems(modules, ours=("maskdepth",)) == [
        "maskdepth/data/archive.py:1: maskdepth.data.archive imports _HIDDEN, a private name of maskdepth.errors",
        "maskdepth/train.py:1: maskdepth.train imports the private module maskdepth.data._buffers",
    ]
    assert long_functions(modules) == [f"maskdepth.train.fit (line 3): {MAX_FUNCTION_LINES + 1} lines"]
    level, arrows = architecture_stack("## Which module may import which\n\n```\ntrain  ->  synth   a comment\n"
                                       "data                  storage\nmodel, errors\n```\n")
    assert level == {"train": 0, "synth": 0, "data": 1, "model": 2, "errors": 2} and arrows == {("train", "synth")}
    assert layer_problems(modules, level, arrows) == [
        "maskdepth.model:2: model imports data, which is not below it",
    ]
