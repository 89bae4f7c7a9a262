"""The command line's parser and progress output, without a database."""

from __future__ import annotations

import io

import pytest

from orchestrator.cli import _parser
from orchestrator.progress import TerminalProgress


def test_documented_flags_parse():
    args = _parser().parse_args(
        ["populate", "mylab.pipeline", "--target", "A", "--target", "B", "-r", "x=1", "-r", "y=2",
         "--workers", "3", "--json-summary", "s.json"]
    )
    assert (args.module, args.target, args.restrict, args.workers, args.json_summary) == (
        "mylab.pipeline", ["A", "B"], ["x=1", "y=2"], 3, "s.json")
    assert _parser().parse_args(["demo"]).scale == "small"
    assert _parser().parse_args(["plan", "p", "--json"]).json


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["demo", "--scale", "huge"])
    assert exc.value.code == 2


def test_progress_prints_plain_lines_when_not_a_tty():
    out = io.StringIO()
    progress = TerminalProgress(out)
    progress.update("ScanMovie", 1, 8, 0, 1.0)  # not a TTY: no in-place updates
    progress.finish("ScanMovie", 8, 8, 1, 2.0)
    assert out.getvalue().count("\n") == 1
    assert "ScanMovie" in out.getvalue() and "8/8" in out.getvalue() and "errors 1" in out.getvalue()
