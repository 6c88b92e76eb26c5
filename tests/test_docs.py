"""The README is a short front door and the docs hold together (issue 23).

    pytest tests/test_docs.py -q

Fast checks of the text itself: the README's length and what must come early in it, paragraphs a
reader can take in at once, links that lead somewhere, a CLI table that names every subcommand the
parser has, and no reference to the old design page that the repo never held (docs/architecture.md
replaced it).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
# The docs written for the short README; docs/results.md, metrics.md and versions.md have owners of their own.
FRONT_DOCS = [README, DOCS / "usage.md", DOCS / "robustness.md", DOCS / "architecture.md"]
MAX_README_LINES = 200
MAX_PARAGRAPH_WORDS = 120
COLAB_STEPS_BY_LINE = 60
OLD_DESIGN_PAGE = "design" + ".md"  # spelt apart so that this file does not name it
SEARCHED = ["src", "tests", "docs", "notebooks", "configs", "scripts", "benchmarks", ".ci"]
SEARCHED_FILES = ["README.md", "Makefile", "pyproject.toml", "requirements.txt"]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".ipynb", ".txt", ".toml", ".cfg", ".sh", ".json", ".csv", ""}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _prose_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(1-based line number, line) of the lines outside fenced code blocks."""
    kept, fenced = [], False
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            kept.append((number, line))
    return kept


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each block of consecutive non-blank lines that are not code, table
    rows, headings or HTML comments; a list item ("- ", "* ", "1. ") starts a block of its own."""
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, line in _prose_lines(text.splitlines()) + [(0, "")]:
        stripped = line.strip()
        if not stripped or stripped.startswith(("|", "#", "<!--")):
            if current:
                blocks.append((start, " ".join(current)))
            current = []
            continue
        if current and re.match(r"([-*]|\d+\.) ", stripped):
            blocks.append((start, " ".join(current)))
            current = []
        if not current:
            start = number
        current.append(stripped)
    return blocks


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(_lines(path)):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link or image, and every HTML src/href, that is not a URL."""
    pattern = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")
    links = []
    for number, line in _prose_lines(_lines(path)):
        for match in pattern.finditer(line):
            target = match.group(1) or match.group(2)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                links.append((number, target))
    return links


def subcommands() -> set[str]:
    """What `maskdepth --help` lists as COMMAND, read from the parser itself."""
    from maskdepth.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # argparse has no public way
    assert actions, "maskdepth.cli.build_parser() has no subcommands"
    return {name for action in actions for name in action.choices}


def cli_table_commands(text: str) -> set[str]:
    """The subcommands named in the first column of the README's table headed `command | ...`."""
    lines = [line for _, line in _prose_lines(text.splitlines())]
    for i, line in enumerate(lines):
        cells = [c.strip().strip("`").lower() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and cells[0] == "command":
            names = set()
            for row in lines[i + 2:]:
                if not row.lstrip().startswith("|"):
                    break
                first = row.strip().strip("|").split("|")[0]
                names.update(re.findall(r"`(?:maskdepth\s+)?([a-z][a-z-]*)", first))
            return names
    return set()


# --------------------------------------------------------------------------------------------


def test_readme_is_a_short_front_door() -> None:
    count = len(_lines(README))
    assert count <= MAX_README_LINES, f"README.md has {count} lines; at most {MAX_README_LINES}: move details to docs/"


@pytest.mark.parametrize("path", FRONT_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_paragraph_over_120_words(path: Path) -> None:
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    long = [f"line {line}: {len(text.split())} words ({text[:60]}...)"
            for line, text in paragraphs(path.read_text(encoding="utf-8")) if len(text.split()) > MAX_PARAGRAPH_WORDS]
    assert not long, f"{path.relative_to(REPO)}: paragraphs over {MAX_PARAGRAPH_WORDS} words: " + "; ".join(long)


def test_paragraph_rule_counts_prose_only() -> None:
    text = "word " * 121 + "\n\n| a | b |\n|---|---|\n| " + "x " * 200 + "|\n\n```\n" + "y " * 200 + "\n```\n"
    assert [len(t.split()) for _, t in paragraphs(text)] == [121]
    assert [len(t.split()) for _, t in paragraphs("one two\nthree\n\nfour\n")] == [3, 1]
    # with the marker
    assert [len(t.split()) for _, t in paragraphs("- one two\n  three\n- four\n1. five\n")] == [4, 2, 2]


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_somewhere(path: Path) -> None:
    broken = []
    for line, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"line {line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"line {line}: {target} (no heading with anchor #{anchor} in {dest.name})")
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_link_and_anchor_helpers(tmp_path: Path) -> None:
    assert _slug("Generalisation to unseen scenes (issue 12)") == "generalisation-to-unseen-scenes-issue-12"
    assert _slug("`maskdepth predict`: folders, CSV, video") == "maskdepth-predict-folders-csv-video"
    assert _slug("data.skip_bad and `keep_last`") == "dataskip_bad-and-keep_last"
    line = 'see [a](docs/a.md#x), ![b](img.png "t"), [c](https://x.org/y) and <img src="docs/c.png">'
    path = tmp_path / "x.md"
    path.write_text(line, encoding="utf-8")
    assert [t for _, t in relative_links(path)] == ["docs/a.md#x", "img.png", "docs/c.png"]


def test_colab_steps_come_early_and_numbered() -> None:
    lines = _lines(README)
    heading = next((i for i, line in enumerate(lines) if re.match(r"#+ .*colab", line, re.IGNORECASE)), None)
    assert heading is not None, "README.md has no Colab section"
    first = next((i for i in range(heading, len(lines)) if re.match(r"1\.\s", lines[i])), None)
    assert first is not None, "the README's Colab section has no numbered steps (1. 2. 3.)"
    assert first + 1 <= COLAB_STEPS_BY_LINE, (
        f"the Colab steps start at line {first + 1}; they must start by line {COLAB_STEPS_BY_LINE}"
    )
    assert any(re.match(r"2\.\s", line) for line in lines[first:first + 30]), "only one numbered Colab step"


def test_readme_cli_table_names_every_subcommand() -> None:
    commands = subcommands()
    assert {"train", "predict"} <= commands  # the parser was read
    named = cli_table_commands(README.read_text(encoding="utf-8"))
    assert named, "README.md has no CLI table whose first column is headed `command`"
    missing = sorted(commands - named)
    assert not missing, f"the README's CLI table lacks {', '.join(missing)} (maskdepth --help lists them)"


def test_cli_table_reader() -> None:
    text = ("| command | what it does |\n|---|---|\n| `maskdepth train CONFIG` | t |\n| `check-data DATA` | c |\n"
            "\nafter\n")
    assert cli_table_commands(text) == {"train", "check-data"}


def test_nothing_refers_to_the_old_design_page() -> None:
    me = Path(__file__).resolve()
    files = [REPO / name for name in SEARCHED_FILES if (REPO / name).is_file()]
    for folder in SEARCHED:
        if (REPO / folder).is_dir():
            files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                      and "__pycache__" not in p.parts]
    offenders = []
    for path in files:
        if path.resolve() == me:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if OLD_DESIGN_PAGE in line]
    assert not offenders, (f"{OLD_DESIGN_PAGE} is not in the repo; docs/architecture.md replaced it. "
                           f"Still named in: {', '.join(offenders)}")
