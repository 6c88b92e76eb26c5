"""The command line face: help, version, argument errors, override placement, error lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from maskdepth import __version__
from maskdepth.cli import build_parser, main

COMMANDS = ["make-data", "check-data", "index", "train", "evaluate", "predict"]


def test_every_design_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: maskdepth " + command in capsys.readouterr().out


def test_python_m_and_version() -> None:
    done = subprocess.run([sys.executable, "-m", "maskdepth", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"maskdepth {__version__}"


def test_overrides_after_options_are_collected() -> None:
    args, extra = build_parser().parse_known_args(["evaluate", "ck.pt", "a=1", "--split", "val", "device=cpu"])
    assert args.overrides == ["a=1"] and extra == ["device=cpu"]  # what main() has to merge
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "ck.pt", "--split", "val", "--bogus"])
    assert exit_info.value.code == 2


def test_overrides_after_options_reach_the_command(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from maskdepth import inference

    seen = {}

    def fake_evaluate(checkpoint, **kwargs):
        seen.update(kwargs, checkpoint=checkpoint)
        return {"metrics": {}}

    monkeypatch.setattr(inference, "evaluate_checkpoint", fake_evaluate)
    monkeypatch.setattr(inference, "format_metrics", lambda results: "table")
    assert main(["evaluate", "ck.pt", "data.size=64", "--split", "val", "device=cpu"]) == 0
    assert seen["checkpoint"] == "ck.pt" and seen["split"] == "val"
    assert seen["overrides"] == ["data.size=64", "device=cpu"]
    assert capsys.readouterr().out.strip() == "table"


def test_an_interrupt_without_a_message_prints_the_interruption_line(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24: str(KeyboardInterrupt()) is '' but the exception is truthy, so `exc or 'interrupted'`
    printed an empty `maskdepth: ` line for a Ctrl-C outside training (or a second one inside it)."""
    from maskdepth import synth

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "make_dataset", interrupted)
    assert main(["make-data", "out.zip", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == ["maskdepth: interrupted"], err
