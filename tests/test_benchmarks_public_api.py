"""The benchmarks use maskdepth's public API and config keys only: no file under benchmarks/ imports a
`_private` name of maskdepth, assigns to anything it imported from maskdepth, or calls setattr.
An ablation that needs a switch gets a documented option in the package instead of a monkeypatch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def violations(source: str) -> list[str]:
    """Every private import from maskdepth and every write to something imported from it, as
    `line: what` strings."""
    found, bound = [], set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "maskdepth":
                    if _private(alias.name):
                        found.append(f"{node.lineno}: import {alias.name}")
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "maskdepth":
            for alias in node.names:
                if _private(node.module) or alias.name.startswith("_"):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for target in targets:
            base = target
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if target is not base and isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{node.lineno}: assigns to {ast.unparse(target)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            # the check cannot follow what a setattr reaches (`swap(owner, name, value)`): none at all
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_the_public_api_only(path):
    assert violations(path.read_text()) == []


def test_the_check_sees_private_imports_and_monkeypatching():
    source = """
import maskdepth.data._buffers
from maskdepth.data import dataset, images
from maskdepth.data.images import _png_rows
from maskdepth.data.manifest import _load as load
import maskdepth.data.dataset as ds
from maskdepth.config import load_config

images._jpeg_frame = None
dataset._NEW_SHARED.value = None
ds.SOMETHING += 1
setattr(dataset, "_MALLOPT", None)

def swap(owner, name, value):
    setattr(owner, name, value)

cfg = load_config("x.yaml")
cfg.train.epochs = 3            # a config object, not a module: allowed
"""
    found = violations(source)
    assert [line.split(":")[0] for line in found] == ["2", "4", "5", "9", "10", "11", "12", "15"], found


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_what_benchmarks_import_from_maskdepth_exists(path):
    """A benchmark imports maskdepth's names inside its functions too, which only a run would
    reach: a module that moved (maskdepth.data.synthetic -> maskdepth.synth) fails here first."""
    import importlib.util

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "maskdepth":
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)
                       and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            assert not missing, f"line {node.lineno}: {node.module} has no {', '.join(missing)}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "maskdepth":
                    importlib.import_module(alias.name)
