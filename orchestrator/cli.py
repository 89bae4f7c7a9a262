"""The ``djdask`` command line.

Exit codes: 0 when every attempted key succeeded, 1 when a ``make()`` failed,
2 for bad input or an unreachable database (a one-paragraph message, no
traceback, nothing changed), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from .errors import DjdaskError

__all__ = ["main"]

logger = logging.getLogger("djdask")


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


# -- commands ----------------------------------------------------------------------
def _cmd_plan(args: argparse.Namespace) -> int:
    from .database import connect
    from .planner import plan, select

    connect()
    selection = select(args.module, args.target, args.restrict)
    planned = plan(selection.graph, selection.tables, selection.restriction)
    rows = [r.as_dict() for r in planned]
    if args.json:
        print(json.dumps({"module": args.module, "restriction": selection.restriction, "tables": rows}, default=str))
    else:
        _print_table(
            [{**r.as_dict(), "note": r.note} for r in planned],
            ["table", "tier", "depth", "total", "missing", "ignored", "note"],
        )
        if any(not r.reserved for r in planned):
            print(
                "\nUnreserved tables have no jobs table (no primary-key attribute comes from a foreign key, "
                "so DataJoint cannot create one): one campaign at a time makes their keys, each after "
                "DataJoint's 'already made' check, as DataJoint's populate() does."
            )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .database import connect
    from .planner import reservation_holders, select, table_counts

    connect()
    selection = select(args.module)
    rows = table_counts(selection.graph, selection.tables)
    holders = reservation_holders(selection.graph, selection.tables)
    if args.json:
        print(json.dumps({"module": args.module, "tables": rows, "holders": holders}, default=str))
        return 0
    _print_table(
        [{**r, "note": "" if r["jobs_table"] else "unreserved (no jobs table)"} for r in rows],
        ["table", "rows", "pending", "reserved", "error", "ignore", "note"],
    )
    if holders:
        print("\nReservations held by:")
        _print_table(
            [{**h, "tables": ", ".join(h["tables"])} for h in holders],
            ["host", "pid", "user", "keys", "since", "tables"],
        )
    else:
        print("\nNo key is reserved: no campaign or worker is running.")
    return 0


def _cmd_errors(args: argparse.Namespace) -> int:
    from .database import connect
    from .planner import error_groups, select

    connect()
    selection = select(args.module)
    names = _selected_tables(selection, args.table) if args.table else None
    groups = error_groups(selection.graph, selection.tables, names)
    if args.json:
        print(json.dumps({"module": args.module, "errors": groups}, default=str))
        return 0
    if not groups:
        print("No error rows.")
        return 0
    for g in groups:
        key = ", ".join(f"{k}={v}" for k, v in g["example_key"].items())
        print(f"{g['table']}: {g['count']} x {g['message'].splitlines()[0][:200] if g['message'] else ''}")
        print(f"    e.g. {key}")
    print(
        f"\n{sum(g['count'] for g in groups)} error row(s). Details: djdask jobs {args.module} --status error; "
        f"retry: djdask retry {args.module}"
    )
    return 0


def _run_campaign(module: str, args: argparse.Namespace, targets=(), restrictions=()) -> int:
    from .campaign import Campaign
    from .planner import select, table_counts
    from .progress import TerminalProgress

    selection = select(module, targets, restrictions)
    campaign = Campaign(
        selection,
        workers=args.workers,
        progress=TerminalProgress(sys.stdout),
        target_duration=getattr(args, "target_duration", None),
        max_calls=getattr(args, "max_calls", None),
        priority=getattr(args, "priority", None),
        cluster=_pools_arg(getattr(args, "cluster", None)),
        performance_report=getattr(args, "performance_report", None),
        make_kwargs=getattr(args, "make_kwargs", None),
        store=getattr(args, "store", None),
    )

    def stop(signum: int, frame: Any) -> None:
        # The first Ctrl-C or SIGTERM stops gracefully; the second aborts.
        if campaign.stopping:
            raise KeyboardInterrupt
        print(
            "\ndjdask: stopping: no new keys; running ones may finish (Ctrl-C again to abort).",
            file=sys.stderr,
            flush=True,
        )
        campaign.request_stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = campaign.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = {r["table"]: r for r in table_counts(selection.graph, selection.tables)}
    rows = [
        {
            "table": t.table,
            "made": t.succeeded,
            "errors": t.errors,
            "retries": t.retries,
            "tasks": t.tasks,
            "seconds": f"{t.seconds:.2f}",
            "rows": counts[t.table]["rows"],
            "pending": counts[t.table]["pending"],
        }
        for t in summary.tables
    ]
    print()
    _print_table(rows, ["table", "made", "errors", "retries", "tasks", "seconds", "rows", "pending"])
    state = "stopped" if summary.cancelled else "finished"
    print(f"\nCampaign {state} in {summary.seconds:.1f} s with {summary.errors} error(s).")
    if summary.cancelled:
        print("Reserved keys were released. Run the same command to resume.", file=sys.stderr)
    if summary.waiting_for_resources:
        print("No worker had the resources for: " + ", ".join(summary.waiting_for_resources), file=sys.stderr)
    if summary.errors:
        print(f"See them with: djdask jobs {module} --status error")
    if getattr(args, "performance_report", None) and os.path.exists(args.performance_report):
        print(f"Dask performance report: {args.performance_report}")
    if args.json_summary:
        with open(args.json_summary, "w") as f:
            json.dump({"module": module, **summary.as_dict()}, f, indent=2)
    return summary.exit_code


def _pools_arg(values: list[str] | None) -> dict[str, str] | None:
    """``--cluster PROFILE`` or ``--cluster POOL=PROFILE`` (repeated) as ``{pool: profile}``."""
    if not values:
        return None
    pools: dict[str, str] = {}
    for value in values:
        pool, _, profile = value.rpartition("=")
        pool = pool or "default"
        if not profile or pool in pools:
            raise DjdaskError(
                f"--cluster {value!r}: give each pool once, as --cluster PROFILE (the default pool) or "
                "--cluster POOL=PROFILE, e.g. --cluster default=slurm --cluster gpu=gpu."
            )
        pools[pool] = profile
    return pools


def _make_kwargs_arg(value: str | None) -> dict | None:
    """``--make-kwargs JSON``: a JSON object of keyword arguments for every make()."""
    from .checks import check_make_kwargs

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise DjdaskError(
            f"--make-kwargs {value!r} is not JSON ({err.msg} at character {err.pos}). Give a JSON object, "
            "e.g. --make-kwargs '{\"scale\": 3}'."
        ) from None
    return check_make_kwargs(parsed, "--make-kwargs")


def _cmd_populate(args: argparse.Namespace) -> int:
    from .checks import check_priority
    from .database import connect

    check_priority(args.priority)  # before anything reaches the database
    args.make_kwargs = _make_kwargs_arg(args.make_kwargs)
    pools = _pools_arg(args.cluster)
    if pools:
        from djdask.clusters import resolve

        for profile in pools.values():  # a bad profile is reported before anything else happens
            resolve(profile).validate()
    connect()
    if args.dry_run:
        args.json = False
        return _cmd_plan(args)
    from .database import configure_store

    print(f"Arrays: {configure_store(args.store)}", flush=True)
    return _run_campaign(args.module, args, args.target, args.restrict)


def _cmd_gc(args: argparse.Namespace) -> int:
    from dask.utils import parse_timedelta

    from . import config
    from .database import configure_store, connect
    from .loader import load_pipeline
    from .storage import collect_garbage

    connect()
    configure_store(args.store)
    loaded = load_pipeline(args.module)
    min_age = parse_timedelta(config.resolve("storage.gc-min-age", args.min_age))
    connection = next(iter(loaded.tables.values()))().connection
    report = collect_garbage(loaded.schemas, connection=connection, dry_run=args.dry_run, min_age=min_age)
    verb = "would remove" if args.dry_run else "removed"
    for store, stats in report.items():
        print(
            f"store {store}: {stats['referenced']} referenced, {stats['orphaned']} unreferenced "
            f"({stats['orphaned_bytes']} bytes); {verb} {stats['removed']}; "
            f"{stats['too_recent']} kept as younger than {min_age:.0f} s"
        )
        for path in stats["paths"]:
            print(f"  {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .database import configure_store, connect, describe

    connect()
    print(f"Database: {describe()}", flush=True)
    print(f"Arrays: {configure_store(args.store)}", flush=True)
    from djdask.pipeline.demo import insert_demo_data

    scans = insert_demo_data(args.scale)
    print(f"Reference pipeline ready: {scans} scans at scale {args.scale!r}.", flush=True)
    return _run_campaign("djdask.pipeline", args)


def _selected_tables(selection, names: Sequence[str]) -> list[str]:
    if not names:
        return list(selection.graph.order)
    return [selection.graph.resolve(n) for n in names]


def _cmd_jobs(args: argparse.Namespace) -> int:
    from .database import connect
    from .planner import existing_jobs, select

    connect()
    selection = select(args.module)
    columns = ["status", "priority", "scheduled_time", "reserved_time", "host", "pid", "connection_id", "error_message"]
    rows = []
    for name, jobs in existing_jobs(selection.tables, _selected_tables(selection, args.table)):
        query = jobs & {"status": args.status} if args.status else jobs
        for row in query.to_dicts(order_by=["priority", "scheduled_time"], limit=args.limit):
            key = {k: row[k] for k in jobs.primary_key}
            rows.append({"table": selection.graph.class_names[name], "key": key, **{c: row[c] for c in columns}})
    from .database import redact, secrets

    known = secrets()  # a make() may have put one in its error message
    for row in rows:
        row["error_message"] = redact(row["error_message"] or "", known) or None
    if args.json:
        print(json.dumps({"module": args.module, "jobs": rows}, default=str))
        return 0
    for row in rows:
        row["key"] = ", ".join(f"{k}={v}" for k, v in row["key"].items())
        row["error_message"] = (row["error_message"] or "")[:60]
        row["reserved_time"] = row["reserved_time"] or ""
    _print_table(rows, ["table", "key", *columns])
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    from .database import connect
    from .jobs import JobQueue
    from .planner import select

    connect()
    selection = select(args.module)
    from .unreserved import has_jobs_table

    total = 0
    for name in _selected_tables(selection, args.table):
        if not has_jobs_table(selection.tables[name]):
            continue  # no jobs table, no error rows: its failed keys are missing, and made by the next campaign
        count = JobQueue(selection.tables[name]()).retry_errors()
        total += count
        if count:
            print(f"{selection.graph.class_names[name]}: {count} error row(s) back to pending")
    print(f"{total} key(s) will be retried by the next campaign.")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from .database import connect
    from .leases import lease_timeout, recover_orphans
    from .planner import existing_jobs, select

    connect()
    selection = select(args.module)
    connection = selection.connection
    names = {
        jobs.full_table_name: selection.graph.class_names[name]
        for name, jobs in existing_jobs(selection.tables, selection.graph.order)
    }
    freed = recover_orphans(connection, list(names), lease_timeout=lease_timeout())
    for table, count in freed.items():
        if count:
            print(f"{names[table]}: {count} orphaned reservation(s) back to pending")
    print(f"{sum(freed.values())} orphaned reservation(s) freed.")
    return 0


def _cmd_ignore(args: argparse.Namespace) -> int:
    from .database import connect
    from .errors import RestrictionError
    from .jobs import JobQueue
    from .planner import parse_restrictions, select
    from .unreserved import has_jobs_table

    connect()
    selection = select(args.module)
    name = selection.graph.resolve(args.table)
    cls = selection.tables[name]
    class_name = selection.graph.class_names[name]
    if not has_jobs_table(cls):
        raise RestrictionError(
            f"{class_name} has no jobs table (no primary-key attribute comes from a foreign key), so it has no "
            "`ignore` rows: it runs unreserved. Restrict the campaign instead (-r ATTR=VALUE)."
        )
    restriction = parse_restrictions(args.restrict, selection.graph.cut([class_name]), selection.tables)
    own = set(cls().key_source.heading.names)
    foreign = sorted(set(restriction) - own)
    if foreign:  # ignored silently, they would mark every missing key
        raise RestrictionError(
            f"{class_name}'s keys have no attribute {', '.join(foreign)}. Restrict by its own: "
            f"{', '.join(sorted(own))}."
        )
    counts = JobQueue(cls(), restriction).ignore()
    print(
        f"{class_name}: {counts['ignored']} missing key(s) marked ignore; no campaign or populate(reserve_jobs=True) "
        f"makes them until their rows are deleted from {cls().jobs.full_table_name}."
    )
    if counts["reserved"]:
        print(f"{counts['reserved']} matching key(s) are reserved by a running worker and were left to it.")
    return 0


def _cmd_clusters(args: argparse.Namespace) -> int:
    import yaml

    from djdask.clusters import profile_names, resolve

    from .errors import ProfileError

    if args.action == "list":
        rows = [{"profile": n, "kind": resolve(n).raw.get("kind")} for n in profile_names()]
        _print_table(rows, ["profile", "kind"])
        return 0
    if not args.profile:
        raise ProfileError(f"`djdask clusters {args.action}` needs a profile name: djdask clusters {args.action} slurm")
    profile = resolve(args.profile)
    if args.action == "show":
        print(yaml.safe_dump({args.profile: profile.shown()}, sort_keys=False).rstrip())
    elif not hasattr(profile.kind, "script"):
        raise ProfileError(f"Profile {args.profile!r} is of kind {profile.kind.name!r}, which submits no job script.")
    else:
        print(profile.kind.script(args.profile, profile.raw))
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from .database import EmbeddedPostgres

    server = EmbeddedPostgres()
    if args.action == "start":
        status = server.start()
        print(f"Embedded PostgreSQL running (pid {status.pid}) in {status.data_dir}")
        print(f"URL: {server.url()}")
    elif args.action == "stop":
        print("Embedded PostgreSQL stopped." if server.stop() else "Embedded PostgreSQL was not running.")
    elif args.action == "status":
        status = server.status()
        state = f"running (pid {status.pid})" if status.running else "stopped"
        print(f"Embedded PostgreSQL: {state}; data in {status.data_dir}")
        return 0 if status.running else 3
    elif args.action == "url":
        print(server.url())
    return 0


# -- parser ---------------------------------------------------------------------------
def restrict_option(p: argparse.ArgumentParser, help: str) -> None:
    """``-r ATTR=VALUE``, repeatable: checked against the tables' headings, never raw SQL."""
    p.add_argument("-r", "--restrict", action="append", default=[], metavar="ATTR=VALUE", help=help)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--store", metavar="STORE", help=store_help)
    p.add_argument("--scale", choices=["small", "medium"], default="small")
    p.add_argument("--json-summary", metavar="FILE", help="write the campaign summary as JSON")
    p.add_argument(
        "--performance-report", metavar="FILE", help="write Dask's performance report of the campaign (HTML)"
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("plan", help="tables in order with their missing-key counts; changes nothing")
    selection_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("populate", help="populate the pipeline on Dask workers")
    selection_args(p)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU cores)")
    p.add_argument("--json-summary", metavar="FILE", help="write the campaign summary as JSON")
    p.add_argument(
        "--performance-report", metavar="FILE", help="write Dask's performance report of the campaign (HTML)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--max-calls", type=int, metavar="N", help="make() at most N keys in all")
    p.add_argument(
        "--make-kwargs",
        metavar="JSON",
        help="keyword arguments for every make(), as a JSON object, as populate(make_kwargs=...)",
    )
    p.add_argument(
        "--priority",
        type=int,
        metavar="P",
        help="new jobs get priority P; only jobs of priority <= P run (lower runs first)",
    )
    p.add_argument("--store", metavar="STORE", help=store_help)
    p.add_argument(
        "--target-duration", metavar="DURATION", help="how long one Dask task should take, e.g. 5s (default 2s)"
    )
    p.add_argument(
        "--cluster",
        metavar="[POOL=]PROFILE",
        action="append",
        help="where workers run (djdask clusters list); default local. Repeat with POOL=PROFILE "
        "for several pools: tables go to the pool offering their resources, else `default`",
    )
    p.set_defaults(func=_cmd_populate)

    p = sub.add_parser("errors", help="error rows grouped by message, with counts and an example key")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", action="append", default=[], metavar="TABLE", help="only this table (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_errors)

    p = sub.add_parser("gc", help="remove Zarr stores of <xarray@> results that no row references")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument(
        "--min-age",
        metavar="DURATION",
        help="only remove stores older than this (default djdask.storage.gc-min-age, 1h)",
    )
    p.add_argument("--store", metavar="STORE", help=store_help)
    p.set_defaults(func=_cmd_gc)

    p = sub.add_parser("clusters", help="cluster profiles: list, show, script")
    p.add_argument("action", choices=["list", "show", "script"])
    p.add_argument("profile", nargs="?", help="profile name (show, script)")
    p.set_defaults(func=_cmd_clusters)

    p = sub.add_parser("status", help="per table: rows, pending, reserved, error")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("jobs", help="list jobs-table rows")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    p.add_argument("--status", choices=["pending", "reserved", "success", "error", "ignore"])
    p.add_argument("--limit", type=int, default=None, help="at most this many rows per table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("retry", help="put error rows back to pending")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    p.set_defaults(func=_cmd_retry)

    p = sub.add_parser("ignore", help="mark missing keys of a table `ignore`, as DataJoint's jobs.ignore(key)")
    p.add_argument("module", help="importable pipeline package or module")
    p.add_argument("--table", required=True, metavar="TABLE", help="the table (its class name)")
    restrict_option(p, "only keys with this attribute value (repeatable); default every missing key")
    p.set_defaults(func=_cmd_ignore)

    p = sub.add_parser("release", help="free orphaned reservations now")
    p.add_argument("module", help="importable pipeline package or module")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("db", help="the embedded PostgreSQL server")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.set_defaults(func=_cmd_db)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM (scancel, kill, a batch system's walltime) unwinds like Ctrl-C, so
    # that a campaign releases the keys it holds on its way out.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``djdask`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from .logs import setup_logging

    setup_logging(verbose=args.verbose)
    from .database import import_datajoint

    import_datajoint()  # first, so that DataJoint's import-time warnings are filtered
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except DjdaskError as err:
        print("djdask: " + textwrap.fill(str(err), width=100, subsequent_indent="  "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("djdask: interrupted; reserved keys were released. Run the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
