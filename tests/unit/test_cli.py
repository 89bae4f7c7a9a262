"""The command line's parser and progress output, without a database."""

from __future__ import annotations

import io

import pytest

from djdask.cli.parser import build_parser
from djdask.monitor.progress import TerminalProgress


def test_documented_flags_parse():
    args = build_parser().parse_args(
        [
            "populate",
            "mylab.pipeline",
            "--target",
            "A",
            "--target",
            "B",
            "-r",
            "x=1",
            "-r",
            "y=2",
            "--workers",
            "3",
            "--json-summary",
            "s.json",
        ]
    )
    assert (args.module, args.target, args.restrict, args.workers, args.json_summary) == (
        "mylab.pipeline",
        ["A", "B"],
        ["x=1", "y=2"],
        3,
        "s.json",
    )
    assert build_parser().parse_args(["demo"]).scale == "small"
    assert build_parser().parse_args(["plan", "p", "--json"]).json


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["demo", "--scale", "huge"])
    assert exc.value.code == 2


def test_populate_campaign_flags_parse():
    args = build_parser().parse_args(
        ["populate", "p", "--dry-run", "--max-calls", "5", "--priority", "2", "--target-duration", "5s"]
    )
    assert (args.dry_run, args.max_calls, args.priority, args.target_duration) == (True, 5, 2, "5s")


ROWS = [
    {"table": "ScanMovie", "done": 8, "in_flight": 2, "pending": 6, "errors": 1, "rate": 4.0, "eta": 2.0},
    {"table": "CellStats", "done": 0, "in_flight": 0, "pending": 0, "errors": 0, "rate": 0.0, "eta": None},
]


def test_progress_prints_plain_blocks_when_not_a_tty():
    out = io.StringIO()
    progress = TerminalProgress(out, interval=3600)
    progress.update(ROWS)  # not a TTY and within the interval: nothing yet
    progress.finish(ROWS)
    text = out.getvalue()
    assert "\x1b" not in text  # no cursor movement in a log file
    lines = text.splitlines()
    assert len(lines) == 3 and "in flight" in lines[0]
    assert lines[1].split() == ["ScanMovie", "8", "2", "6", "1", "4.0", "2s"]
    assert lines[2].split()[-1] == "-"


def test_progress_redraws_in_place_on_a_tty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    progress = TerminalProgress(out)
    progress.finish(ROWS)
    progress.finish(ROWS)
    assert "\x1b[3F" in out.getvalue()  # the second block moved back over the first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clusters", "script", "lsf", "--scheduler", "127.0.0.1:8786"], "is not a scheduler address"),
        (["clusters", "script", "local", "--scheduler", "tcp://127.0.0.1:8786"], "submits no job script"),
        (["clusters", "script", "slurm", "--controller", "mylab.pipeline"], "controller is a job of `djdask submit"),
        (["clusters", "script", "k8s", "--controller", "--target X"], "needs the pipeline module first"),
        (["clusters", "script", "k8s", "--controller", "m --cluster gpu"], "leave --cluster out"),
        (["clusters", "script", "k8s", "--controller", "m 'unclosed"], "Quote it as one argument"),
    ],
)
def test_clusters_script_options_refuse_bad_input(args, message, capsys, monkeypatch):
    from djdask.cli.parser import main

    monkeypatch.setenv(
        "DASK_DJDASK__CLUSTERS__K8S", '{"kind": "kubernetes", "image": "i:1", "cores": 1, "memory": "1G"}'
    )
    import dask.config

    dask.config.refresh()
    try:
        assert main(args) == 2
    finally:
        monkeypatch.delenv("DASK_DJDASK__CLUSTERS__K8S")
        dask.config.refresh()
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_the_lsf_script_joins_the_scheduler_given(capsys):
    from djdask.cli.parser import main

    assert main(["clusters", "script", "lsf", "--scheduler", "tls://10.0.0.5:8786"]) == 0
    out = capsys.readouterr().out
    assert "dask_worker tls://10.0.0.5:8786 " in out and "SCHEDULER" not in out
