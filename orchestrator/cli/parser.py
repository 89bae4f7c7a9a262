"""The ``djdask`` command line.

Exit codes: 0 when every attempted key succeeded, 1 when a ``make()`` failed,
2 for bad input or an unreachable database (a one-paragraph message, no
traceback, nothing changed), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from djdask.campaign.checks import check_duration, check_output_file, count_arg, priority_arg
from djdask.errors import DjdaskError, InvalidInputError

__all__ = ["COMMAND_MODULES", "build_parser", "command", "main"]


def _paragraph(message: str) -> str:
    """``djdask: message`` as one paragraph, the message in lines of 100 columns, all but its
    first indented.  Lines of the message indented by four spaces (what a batch job wrote,
    quoted) are kept as they are; the prose between them is wrapped."""
    blocks: list[str] = []
    prose: list[str] = []

    def wrap() -> None:
        if prose:
            text = textwrap.fill(
                " ".join(prose),
                width=100,
                initial_indent="" if not blocks else "  ",
                subsequent_indent="  ",
                break_on_hyphens=False,
                break_long_words=False,
            )
            blocks.append(("djdask: " if not blocks else "") + text)
            prose.clear()

    for line in message.splitlines() or [""]:
        if line.startswith("    ") and line.strip():
            wrap()
            blocks.append(("djdask:" if not blocks else "  ") + line.rstrip())
        else:
            prose.append(line.strip())
    wrap()
    return "\n".join(blocks)


# -- parser ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage mistakes read like every other djdask error: one paragraph, exit code 2."""

    def error(self, message: str) -> Any:
        help_command = f"`{self.prog} --help`".replace(" ", "\0")  # one word: the wrapping keeps it whole
        text = _paragraph(f"{message.rstrip('.')}. See {help_command}.").replace("\0", " ")
        self.exit(2, text + "\n")


def _checked(check: Callable[[str, str], Any], option: str) -> Callable[[str], Any]:
    """The ``type`` of ``option``: its text through ``check`` (:mod:`djdask.campaign.checks`, which
    the Python API's checks share), whose refusal is the parser's error message as it is."""

    def convert(text: str) -> Any:
        try:
            return check(text, option)
        except InvalidInputError as err:
            # Not ArgumentTypeError, whose message argparse prefixes with "argument OPTION:":
            # the check's message names the option already.
            raise argparse.ArgumentError(None, str(err)) from None

    convert.__name__ = f"{check.__name__}({option})"
    return convert


#: The duration options, each with whether 0 is a duration it takes: read as seconds by
#: :func:`main` once Dask's config is loaded, as parsing a duration imports Dask.
_DURATIONS = {"target_duration": False, "min_age": True, "stop_after": False}


def _durations(args: argparse.Namespace) -> None:
    """The duration options as seconds, checked as the Python API checks a duration."""
    for option, zero in _DURATIONS.items():
        text = getattr(args, option, None)
        if text is not None:
            setattr(args, option, check_duration(text, "--" + option.replace("_", "-"), zero=zero))


#: Where each group of commands lives: the parser names the function that runs a command and
#: imports its module only when that command runs (``djdask status`` does not import the campaign loop).
COMMAND_MODULES = {
    "inspection": "djdask.cli.inspection",
    "running": "djdask.cli.running",
    "jobs_tables": "djdask.cli.jobs_tables",
    "garbage": "djdask.cli.garbage",
    "profiles": "djdask.cli.profiles",
    "settings": "djdask.cli.settings",
    "server": "djdask.cli.server",
    "campaigns": "djdask.cli.campaigns",
    "submit": "djdask.cli.submit",
}


def command(group: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The function ``name`` of the command group ``group``, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(COMMAND_MODULES[group]), name)(args)

    run.__qualname__ = f"{group}.{name}"
    return run


def output_files(p: argparse.ArgumentParser) -> None:
    """``--json-summary`` and ``--performance-report``: files a campaign writes at its end,
    whose folders are checked now."""
    for option, what in (
        ("--json-summary", "the campaign summary as JSON"),
        ("--performance-report", "Dask's performance report of the campaign (HTML)"),
    ):
        p.add_argument(option, type=_checked(check_output_file, option), metavar="FILE", help=f"write {what}")


def restrict_option(p: argparse.ArgumentParser, help: str) -> None:
    """``-r ATTR=VALUE``, repeatable: checked against the tables' headings, never raw SQL."""
    p.add_argument("-r", "--restrict", action="append", default=[], metavar="ATTR=VALUE", help=help)


def build_parser() -> argparse.ArgumentParser:
    """The ``djdask`` command line's parser: every command, its options and their checks."""
    parser = _Parser(
        prog="djdask", description="Run DataJoint pipelines on Dask: one command, every table, any cluster."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    def selection_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("module", help="importable pipeline package or module, e.g. pipeline or mylab.pipeline")
        p.add_argument(
            "--target",
            action="append",
            default=[],
            metavar="TABLE",
            help="populate this table and its auto-populated ancestors (repeatable)",
        )
        restrict_option(p, "only keys with this attribute value (repeatable)")

    store_help = (
        "where <xarray@> arrays go: s3://BUCKET/PREFIX (AWS_* variables), a directory, or a "
        "DataJoint store name; default DataJoint's stores.default, else a local store"
    )
    p = sub.add_parser("demo", help="run the reference pipeline on a LocalCluster")
    p.add_argument("--workers", type=_checked(count_arg, "--workers"), default=2, help="worker processes (default 2)")
    p.add_argument("--store", metavar="STORE", help=store_help)
    p.add_argument("--scale", choices=["small", "medium"], default="small")
    output_files(p)
    p.set_defaults(func=command("running", "demo"))

    p = sub.add_parser("plan", help="tables in order with their missing-key counts; changes nothing")
    selection_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=command("inspection", "plan"))

    def campaign_args(p: argparse.ArgumentParser) -> None:
        selection_args(p)
        p.add_argument(
            "--workers",
            type=_checked(count_arg, "--workers"),
            default=None,
            help="worker processes (default: CPU cores)",
        )
        p.add_argument(
            "--max-calls", type=_checked(count_arg, "--max-calls"), metavar="N", help="make() at most N keys in all"
        )
        p.add_argument(
            "--make-kwargs",
            metavar="JSON",
            help="keyword arguments for every make(), as a JSON object, as populate(make_kwargs=...)",
        )
        p.add_argument(
            "--priority",
            type=_checked(priority_arg, "--priority"),
            metavar="P",
            help="new jobs get priority P; only jobs of priority <= P run (lower runs first)",
        )
        p.add_argument("--store", metavar="STORE", help=store_help)
        p.add_argument(
            "--target-duration",
            metavar="DURATION",
            help="how long one Dask task should take, e.g. 5s (default 2s)",
        )
        p.add_argument(
            "--cluster",
            metavar="[POOL=]PROFILE",
            action="append",
            help="where workers run (djdask clusters list); default local. Repeat with POOL=PROFILE "
            "for several pools: tables go to the pool offering their resources, else `default`",
        )
        p.add_argument(
            "--stop-after",
            metavar="DURATION",
            help="stop claiming after this long (e.g. 6h); running keys finish, the rest are released",
        )
        p.add_argument(
            "--follow",
            action="store_true",
            help="keep the pipeline populated: do not end when nothing is missing; look for new keys every "
            "djdask.campaign.follow-interval until stopped (Ctrl-C, SIGTERM, djdask cancel: exit 0)",
        )
        p.add_argument(
            "--resubmit",
            action="store_true",
            help="near its walltime the controller submits its successor, which goes on (see `djdask submit`)",
        )

    p = sub.add_parser("populate", help="populate the pipeline on Dask workers")
    campaign_args(p)
    output_files(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--campaign-id", metavar="ID", help=argparse.SUPPRESS)  # a submitted campaign's controller
    p.set_defaults(func=command("running", "populate"))

    p = sub.add_parser(
        "submit",
        help="start a campaign's controller as a batch job of the profile (or detached, on local) and return",
    )
    campaign_args(p)
    p.add_argument(
        "--walltime",
        metavar="TIME",
        help="the controller job's walltime (default the profile's), e.g. 24:00:00",
    )
    p.add_argument("--memory", default="4G", help="the controller job's memory (default 4G)")
    p.set_defaults(func=command("submit", "submit"))

    p = sub.add_parser("campaigns", help="running and past campaigns of a pipeline, newest first")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--limit", type=_checked(count_arg, "--limit"), default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=command("campaigns", "campaigns"))

    p = sub.add_parser("cancel", help="stop a running campaign from any machine that reaches the database")
    p.add_argument("id", help="the campaign id (its first digits are enough)")
    p.add_argument("module", nargs="?", help="the pipeline module (needed only in DataJoint's thread-safe mode)")
    p.add_argument("--no-wait", action="store_true", help="return once asked; do not wait for it to stop")
    p.set_defaults(func=command("campaigns", "cancel"))

    p = sub.add_parser("report", help="a campaign's record and accounting, per table and per pool")
    p.add_argument("id", help="the campaign id (its first digits are enough)")
    p.add_argument("module", nargs="?", help="the pipeline module (needed only in DataJoint's thread-safe mode)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=command("campaigns", "report"))

    p = sub.add_parser("errors", help="error rows grouped by message, with counts and an example key")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", action="append", default=[], metavar="TABLE", help="only this table (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=command("inspection", "errors"))

    p = sub.add_parser("gc", help="remove Zarr stores of <xarray@> results that no row references")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument(
        "--min-age",
        metavar="DURATION",
        help="only remove stores older than this (default djdask.storage.gc-min-age, 1h)",
    )
    p.add_argument("--store", metavar="STORE", help=store_help)
    p.set_defaults(func=command("garbage", "gc"))

    p = sub.add_parser("clusters", help="cluster profiles: list, show, script, check")
    p.add_argument("action", choices=["list", "show", "script", "check"])
    p.add_argument("profile", nargs="?", help="profile name (show, script, check)")
    p.add_argument(
        "module",
        nargs="?",
        help="check: the pipeline module to import on the node (without it, what needs no pipeline)",
    )
    p.add_argument("--json", action="store_true", help="check: the steps as JSON, for scripts")
    p.add_argument(
        "--timeout",
        metavar="DURATION",
        help="check: how long the probe job may take to start (default 10m)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="script: the job script of a worker that joins this scheduler (e.g. a running campaign's), "
        "instead of a placeholder",
    )
    p.add_argument(
        "--controller",
        metavar="'MODULE [OPTIONS]'",
        help="script, kubernetes profiles: the Kubernetes objects (a Job and its ServiceAccount, Role, "
        "RoleBinding and ConfigMap) that run `djdask populate MODULE [OPTIONS] --cluster PROFILE` inside "
        "the cluster; apply them with kubectl apply -f -",
    )
    p.set_defaults(func=command("profiles", "clusters"))

    p = sub.add_parser("status", help="per table: rows, pending, reserved, error")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=command("inspection", "status"))

    p = sub.add_parser(
        "jobs", help="list jobs-table rows; `jobs init MODULE` creates the jobs tables (once, as a privileged user)"
    )
    p.add_argument("module", help="importable pipeline package or module (or `init`, then the module)")
    p.add_argument("init", nargs="?", metavar="MODULE", help=argparse.SUPPRESS)
    p.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    p.add_argument("--status", choices=["pending", "reserved", "success", "error", "ignore"])
    p.add_argument(
        "--limit", type=_checked(count_arg, "--limit"), default=None, help="at most this many rows per table"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=command("jobs_tables", "jobs"))

    p = sub.add_parser("retry", help="put error rows back to pending")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    p.set_defaults(func=command("jobs_tables", "retry"))

    p = sub.add_parser("ignore", help="mark missing keys of a table `ignore`, as DataJoint's jobs.ignore(key)")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", required=True, metavar="TABLE", help="the table (its class name)")
    restrict_option(p, "only keys with this attribute value (repeatable); default every missing key")
    p.set_defaults(func=command("jobs_tables", "ignore"))

    p = sub.add_parser("release", help="free orphaned reservations now")
    p.add_argument("module", help="importable pipeline package or module")
    p.set_defaults(func=command("jobs_tables", "release"))

    p = sub.add_parser("config", help="djdask's settings: value and where each was set (all checked first)")
    p.add_argument("--markdown", action="store_true", help="print the settings reference (docs/settings.md)")
    p.set_defaults(func=command("settings", "config"))

    p = sub.add_parser("db", help="the embedded PostgreSQL server")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.set_defaults(func=command("server", "db"))
    return parser


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM (scancel, kill, a batch system's walltime) unwinds like Ctrl-C, so
    # that a campaign releases the keys it holds on its way out.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``djdask`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        # lazy: `--help` and usage errors answer without YAML, Dask or DataJoint, which load in this order
        from djdask.config.schema import check, load_dask_config

        load_dask_config()  # a config file Dask cannot read: a message, not a traceback at import
        from djdask.logs import setup_logging

        setup_logging(verbose=args.verbose)
        check()  # every djdask.* setting, before anything is touched
        _durations(args)
        from djdask.db.connect import import_datajoint

        import_datajoint()  # first, so that DataJoint's import-time warnings are filtered
        signal.signal(signal.SIGTERM, _terminate)
        return args.func(args)
    except DjdaskError as err:
        print(_paragraph(str(err)), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `djdask jobs ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("djdask: interrupted; reserved keys were released. Run the same command to resume.", file=sys.stderr)
        return 130
    except Exception as err:
        # lazy: only an error no check foresaw needs the jobs tables' and the secrets' helpers
        from djdask.db.connect import redact
        from djdask.jobs.queue import is_permission_error

        if not is_permission_error(err):
            raise
        reason = redact(str(err).strip().splitlines()[0][:300])
        print(
            _paragraph(
                f"The database refused a statement for want of a privilege ({reason}). The README's "
                "Security section lists the privileges a campaign needs on each backend; ask your database "
                "administrator for them. Nothing was changed by the statement refused."
            ),
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
