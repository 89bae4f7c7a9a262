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


# -- argument checks: one definition, the parser's and the Python API's -------------------
@pytest.mark.parametrize(
    ("argv", "check", "value"),
    [
        (["populate", "m", "--workers", "0"], "check_count", 0),
        (["populate", "m", "--max-calls", "-5"], "check_count", -5),
        (["jobs", "m", "--limit", "many"], "check_count", "many"),
        (["populate", "m", "--priority", "200"], "check_priority", 200),
        (["submit", "m", "--priority", "200"], "check_priority", 200),  # submit checks it nowhere else
        (["populate", "m", "--priority", "high"], "check_priority", "high"),
        (["demo", "--json-summary", "/no/such/folder/s.json"], "check_output_file", "/no/such/folder/s.json"),
    ],
)
def test_the_parser_refuses_as_the_python_api_does(argv, check, value, capsys):
    """The parser's ``type=`` callables are the checks Campaign(...) runs, named by the option:
    a message that differs means the two drifted apart again (two copies, two wordings)."""
    from djdask.campaign import checks
    from djdask.errors import InvalidInputError

    option = next(a for a in argv if a.startswith("--"))
    with pytest.raises(InvalidInputError) as expected:
        getattr(checks, check)(value, option)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == f"djdask: {expected.value} See `djdask {argv[0]} --help`.", err


def test_durations_are_checked_once_dask_config_is_loaded(capsys):
    """--target-duration, --stop-after and --min-age are read as seconds by main(), with the
    message check_duration gives the Python API; --min-age alone takes 0."""
    from djdask.campaign.checks import check_duration
    from djdask.cli.parser import main
    from djdask.errors import InvalidInputError

    assert main(["populate", "m", "--target-duration", "soon"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    with pytest.raises(InvalidInputError) as expected:
        check_duration("soon", "--target-duration")
    assert err == f"djdask: {expected.value}"
    assert main(["gc", "m", "--min-age=-1h"]) == 2
    assert "--min-age '-1h' is not a duration of 0 or more" in " ".join(capsys.readouterr().err.split())
    assert check_duration("0s", "--min-age", zero=True) == 0.0 and check_duration("2m", "x") == 120.0
    with pytest.raises(InvalidInputError, match="--stop-after '0' is not a positive duration"):
        check_duration("0", "--stop-after")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.check_count(0, "workers"),
            "workers=0 is not a whole number of 1 or more: give one, e.g. workers=4.",
        ),
        (lambda c: c.check_count(True, "max_calls"), "max_calls=True is not a whole number"),
        (lambda c: c.check_priority(-1, "priority"), "priority=-1 is outside 0..127"),
        (lambda c: c.check_priority(2.5, "priority"), "priority=2.5 is not a whole number in 0..127"),
        (lambda c: c.check_duration("soon", "target_duration"), "target_duration='soon' is not a positive duration"),
        (lambda c: c.check_duration(True, "target_duration"), "target_duration=True is not a positive duration"),
    ],
)
def test_the_python_api_names_arguments_as_python_writes_them(call, message):
    """Campaign(workers=0) is told about workers=0, not about an option it never wrote."""
    from djdask.campaign import checks
    from djdask.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as exc:
        call(checks)
    assert str(exc.value).startswith(message), exc.value


def test_the_parser_converts_what_it_checks():
    """Counts and priorities arrive as ints, output files as given; durations stay text until
    main() reads them (parsing a duration imports Dask)."""
    args = build_parser().parse_args(
        ["populate", "m", "--workers", "2", "--priority", "0", "--max-calls", "7", "--stop-after", "1h"]
    )
    assert (args.workers, args.priority, args.max_calls, args.stop_after) == (2, 0, 7, "1h")


def _modules_after(code: str) -> set[str]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())


def test_the_parser_starts_without_dask_or_datajoint():
    """`djdask --help` and a usage error answer at once: the parser and the argument checks
    it shares import neither Dask (whose config main() loads first, to report a bad file)
    nor DataJoint nor YAML. A failure means an import moved to the top of one of them."""
    loaded = _modules_after("import djdask.cli.parser")
    heavy = {"dask", "distributed", "datajoint", "yaml", "cloudpickle", "numpy"}
    assert not {m.split(".")[0] for m in loaded} & heavy


def test_only_a_running_campaign_imports_the_campaign_loop():
    """Each command's module is imported when it runs; none but a campaign that runs needs the
    campaign loop (0.1-0.2 s more to start `djdask status`, `--dry-run` or a refusal)."""
    from djdask.cli.parser import COMMAND_MODULES

    modules = [m for m in COMMAND_MODULES.values() if m.startswith("djdask.cli.")]
    loaded = _modules_after("; ".join(f"import {m}" for m in modules))
    assert set(modules) <= loaded
    assert "djdask.campaign.loop" not in loaded
