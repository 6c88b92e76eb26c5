"""benchmarks/render.py: the tables of docs/results.md from the data files, and nothing else touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import render

REPO = Path(__file__).resolve().parents[1]

SPEEDUP = """\
| px | training, MaskDepthNet / seed | inference, MaskDepthNet / seed |
|---|---|---|
| 64 | x5.37 | x5.00 |
| 192 | x7.77 | – |"""


def _results(tmp_path: Path, **files: dict) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    for stem, data in files.items():
        (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder


def _tiny_report() -> dict:
    return {"meta": {"date": "2026-01-01 00:00 UTC", "command": "python -m benchmarks.report --smoke", "torch": "2.x",
                     "machine": {"cpu": "test", "cpus": 2}},
            "speedup": [{"size": 64, "train_x": 5.3712, "infer_x": 5.0},
                        {"size": 192, "train_x": 7.77, "infer_x": None}]}


def test_a_table_from_a_tiny_data_file(tmp_path):
    page = "<!-- table:report.speedup -->\nstale\n<!-- /table -->\n"
    text, missing = render.render_text(page, _results(tmp_path, report=_tiny_report()))
    assert text == f"<!-- table:report.speedup -->\n{SPEEDUP}\n<!-- /table -->\n"
    assert missing == []
    # rendering again changes nothing
    assert render.render_text(text, tmp_path / "results")[0] == text


def test_the_prose_outside_the_markers_is_kept_byte_for_byte(tmp_path):
    before = "# Résumé\r\n\ntrailing spaces   \n\n\n|not a marked | table|\n<!-- table:report.speedup -->\n"
    between = "<!-- /table -->\n  odd  *prose* <!-- table:not closed\n\n<!-- table:report.meta -->"
    after = "<!-- /table -->no newline at the end"
    page = before + "old\n" + between + "\nold meta\n" + after
    text, _ = render.render_text(page, _results(tmp_path, report=_tiny_report()))
    head, rest = text.split(SPEEDUP + "\n", 1)
    assert head == before
    assert rest.startswith(between + "\n| run |")
    assert text.endswith("\n" + after)
    assert "| command | `python -m benchmarks.report --smoke` |" in text
    assert "| machine | cpu test; cpus 2 |" in text


def test_a_missing_data_file_gives_one_clear_line(tmp_path, capsys):
    page = tmp_path / "results.md"
    page.write_text("intro\n<!-- table:gpu.models -->\n<!-- /table -->\nmiddle\n<!-- table:gpu.train -->\nold\n"
                    "<!-- /table -->\nend\n")
    assert render.main([str(page), "--results", str(_results(tmp_path))]) == 0
    line = "Not measured yet: " + str(tmp_path / "results" / "gpu.json") + " does not exist; bash benchmarks/gpu.sh"
    text = page.read_text()
    assert text.count("Not measured yet") == 1 and line in text
    assert "middle\n<!-- table:gpu.train -->\n<!-- /table -->\nend\n" in text  # the file's other tables: empty
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line)


def test_cells_show_a_dash_for_what_is_missing_and_words_for_booleans():
    row = {"ok": False, "x": 0.5, "none": None, "nan": float("nan"), "n": 1234567}
    assert render.cell("{ok:yes|**no**} ({x:.3f})", row) == "**no** (0.500)"
    assert render.cell("{none:.3f}", row) == render.cell("{nan:.1f}", row) == render.cell("{absent}", row) == "–"
    assert render.cell("{n:,}", row) == "1,234,567"
    assert render.cell("{x} | {x}", row) == "0.5 \\| 0.5"  # a pipe would split the markdown cell


def test_rows_from_several_paths_and_a_column_no_row_has_is_left_out(tmp_path):
    data = {"budget": {"a": {"method": "net", "archive": "a", "unseen_delta1": 0.6, "steps": 10}},
            "baselines": [{"method": "mean depth", "unseen_delta1": 0.4, "training_min": 0}]}
    table = render.render_table("quality.budget", data)
    assert table.splitlines()[0] == "| method | archive | unseen δ1 | steps | training clock, min |"
    assert table.splitlines()[2:] == ["| net | a | 0.600 | 10 | – |", "| mean depth | – | 0.400 | – | 0 |"]


def test_an_unknown_table_stops_with_one_line(tmp_path, capsys):
    results = _results(tmp_path, report=_tiny_report())
    page = tmp_path / "page.md"
    page.write_text("<!-- table:report.nonsense -->\n<!-- /table -->\n")
    assert render.main([str(page), "--results", str(results)]) == 2
    assert "unknown table 'report.nonsense'" in capsys.readouterr().err
    assert page.read_text() == "<!-- table:report.nonsense -->\n<!-- /table -->\n"


def test_a_section_the_data_file_lacks_gives_one_line_with_its_error(tmp_path, capsys):
    data = {**_tiny_report(), "errors": {"data_pipeline": "RuntimeError: boom"}}
    page = tmp_path / "page.md"
    page.write_text("<!-- table:report.data_pipeline -->\n<!-- /table -->\n"
                    "<!-- table:report.speedup -->\n<!-- /table -->\n")
    assert render.main([str(page), "--results", str(_results(tmp_path, report=data))]) == 0
    line = f"Not measured: {tmp_path / 'results' / 'report.json'} has no 'data_pipeline.rows': RuntimeError: boom."
    assert page.read_text() == (f"<!-- table:report.data_pipeline -->\n{line}\n<!-- /table -->\n"
                                f"<!-- table:report.speedup -->\n{SPEEDUP}\n<!-- /table -->\n")
    assert capsys.readouterr().err.strip() == line


def test_docs_results_md_is_what_its_data_files_give():
    """docs/results.md's tables are up to date with docs/results/*.json (`python benchmarks/render.py`)."""
    assert render.main(["--check"]) == 0


def test_every_table_in_docs_results_md_is_known():
    text = (REPO / "docs" / "results.md").read_text()
    names = render.MARKER.findall(text)
    assert names and all(name in render.TABLES or name.endswith(".meta") for _, name, _, _ in names)


@pytest.mark.parametrize("path, expected", [("a.1.b", 3), ("rows.*.x", [1, 2]), ("rows.*", [{"x": 1}, {"x": 2}])])
def test_lookup(path, expected):
    data = {"a": [0, {"b": 3}], "rows": {"p": {"x": 1}, "q": {"x": 2}}}
    assert render.lookup(data, path) == expected


def test_data_files_keep_one_row_a_line_and_read_back_the_same():
    from benchmarks.common import to_json

    data = {"meta": {"command": "python -m benchmarks.x " + "--flag " * 60, "machine": {"cpus": 2}},
            "rows": [{"a": 1, "b": [1, 2], "c": None}, {"a": 2.5, "b": [], "c": "–"}], "empty": {}, "n": 3}
    text = to_json(data)
    assert json.loads(text) == data and text.endswith("}\n")
    assert '  {"a": 1, "b": [1, 2], "c": null},\n' in text
