"""What each ``djdask`` command does (the parser and the entry point are in :mod:`djdask.cli.parser`).

Each command takes the parsed arguments and returns the exit code.  Arguments
and settings were checked by :func:`djdask.cli.parser.main` before it calls one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from djdask.campaign.checks import make_kwargs_arg, pools_arg
from djdask.djcompat import dependencies_loaded_once
from djdask.errors import InvalidInputError

__all__ = [
    "plan",
    "status",
    "errors",
    "populate",
    "gc",
    "demo",
    "jobs",
    "retry",
    "release",
    "ignore",
    "clusters",
    "config",
    "db",
]


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def plan(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.planning.planner import plan, select

    connect()
    selection = select(args.module, args.target, args.restrict)
    with dependencies_loaded_once(selection.connection):
        planned = plan(selection.graph, selection.tables, selection.restriction)
    rows = [r.as_dict() for r in planned]
    if args.json:
        print(json.dumps({"module": args.module, "restriction": selection.restriction, "tables": rows}, default=str))
    else:
        print_table(
            [{**r.as_dict(), "note": r.note} for r in planned],
            ["table", "tier", "depth", "total", "missing", "ignored", "note"],
        )
        if any(not r.reserved for r in planned):
            from djdask.planning.reservable import why_unreserved

            reasons = "; ".join(
                f"{r.table}: {why_unreserved(selection.tables[r.full_name])}" for r in planned if not r.reserved
            )
            print(
                f"\nUnreserved tables have no jobs table ({reasons}): one campaign at a time makes their keys, "
                "each after DataJoint's 'already made' check, as DataJoint's populate() does."
            )
    return 0


def status(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.planning.planner import reservation_holders, select, table_counts

    connect()
    selection = select(args.module)
    with dependencies_loaded_once(selection.connection):
        rows = table_counts(selection.graph, selection.tables)
        holders = reservation_holders(selection.graph, selection.tables)
    if args.json:
        print(json.dumps({"module": args.module, "tables": rows, "holders": holders}, default=str))
        return 0
    print_table(
        [{**r, "note": "" if r["jobs_table"] else "unreserved (no jobs table)"} for r in rows],
        ["table", "rows", "pending", "reserved", "error", "ignore", "note"],
    )
    if holders:
        print("\nReservations held by:")
        print_table(
            [{**h, "tables": ", ".join(h["tables"])} for h in holders],
            ["host", "pid", "user", "keys", "since", "tables"],
        )
    else:
        print("\nNo key is reserved: no campaign or worker is running.")
    return 0


def errors(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.planning.planner import error_groups, select

    connect()
    selection = select(args.module)
    names = selected_tables(selection, args.table) if args.table else None
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


def run_campaign(module: str, args: argparse.Namespace, targets=(), restrictions=()) -> int:
    from djdask.campaign.loop import Campaign
    from djdask.monitor.progress import TerminalProgress
    from djdask.planning.planner import select, table_counts

    selection = select(module, targets, restrictions)
    campaign = Campaign(
        selection,
        workers=args.workers,
        progress=TerminalProgress(sys.stdout),
        target_duration=getattr(args, "target_duration", None),
        max_calls=getattr(args, "max_calls", None),
        priority=getattr(args, "priority", None),
        cluster=pools_arg(getattr(args, "cluster", None)),
        performance_report=getattr(args, "performance_report", None),
        make_kwargs=getattr(args, "make_kwargs", None),
        store=getattr(args, "store", None),
        campaign_id=getattr(args, "campaign_id", None),
    )
    if getattr(args, "stop_after", None):
        from djdask.records.submit import stop_after

        stop_after(campaign, args.stop_after, resubmit=args.resubmit)

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
    if campaign.handing_over:
        from djdask.records.submit import hand_over

        return hand_over(campaign, summary)
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
    print_table(rows, ["table", "made", "errors", "retries", "tasks", "seconds", "rows", "pending"])
    state = "stopped" if summary.cancelled else "finished"
    print(f"\nCampaign {state} in {summary.seconds:.1f} s with {summary.errors} error(s).")
    if summary.cancelled:
        print("Reserved keys were released. Run the same command to resume.", file=sys.stderr)
    if summary.waiting_for_resources:
        print("No worker had the resources for: " + ", ".join(summary.waiting_for_resources), file=sys.stderr)
    for hint in summary.hints:
        print(f"Hint: {hint}", file=sys.stderr)
    if summary.errors:
        print(f"See them with: djdask jobs {module} --status error")
    if getattr(args, "performance_report", None) and os.path.exists(args.performance_report):
        print(f"Dask performance report: {args.performance_report}")
    if args.json_summary:
        with open(args.json_summary, "w") as f:
            json.dump({"module": module, **summary.as_dict()}, f, indent=2)
    return summary.exit_code


def populate(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.errors import InvalidInputError

    if args.resubmit and not args.campaign_id:
        raise InvalidInputError(
            "--resubmit is for campaigns whose controller `djdask submit` started: submit it with "
            "`djdask submit MODULE --cluster PROFILE --resubmit`."
        )
    args.make_kwargs = make_kwargs_arg(args.make_kwargs)
    pools = pools_arg(args.cluster)
    if pools:
        from djdask.clusters import resolve

        for profile in pools.values():  # a bad profile is reported before anything else happens
            resolve(profile).validate()
    connect()
    if args.dry_run:
        args.json = False
        return plan(args)
    from djdask.storage.stores import configure_store

    print(f"Arrays: {configure_store(args.store)}", flush=True)
    return run_campaign(args.module, args, args.target, args.restrict)


def gc(args: argparse.Namespace) -> int:
    from dask.utils import parse_timedelta

    from djdask.config import namespace as config
    from djdask.db.connect import connect
    from djdask.planning.loader import load_pipeline
    from djdask.storage.codec import collect_garbage
    from djdask.storage.stores import configure_store

    connect()
    configure_store(args.store, probe=False)  # gc reads and removes; it writes nothing new
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


def demo(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect, describe
    from djdask.storage.stores import configure_store

    connect()
    print(f"Database: {describe()}", flush=True)
    print(f"Arrays: {configure_store(args.store)}", flush=True)
    from djdask.pipeline.demo import insert_demo_data

    scans = insert_demo_data(args.scale)
    print(f"Reference pipeline ready: {scans} scans at scale {args.scale!r}.", flush=True)
    return run_campaign("djdask.pipeline", args)


def selected_tables(selection, names: Sequence[str]) -> list[str]:
    if not names:
        return list(selection.graph.order)
    return [selection.graph.resolve(n) for n in names]


def jobs(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.planning.planner import existing_jobs, select

    if args.init is not None:
        return jobs_init(args)
    connect()
    selection = select(args.module)
    columns = ["status", "priority", "scheduled_time", "reserved_time", "host", "pid", "connection_id", "error_message"]
    rows = []
    for name, jobs in existing_jobs(selection.tables, selected_tables(selection, args.table)):
        query = jobs & {"status": args.status} if args.status else jobs
        for row in query.to_dicts(order_by=["priority", "scheduled_time"], limit=args.limit):
            key = {k: row[k] for k in jobs.primary_key}
            rows.append({"table": selection.graph.class_names[name], "key": key, **{c: row[c] for c in columns}})
    from djdask.db.connect import redact, secrets

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
    print_table(rows, ["table", "key", *columns])
    return 0


def jobs_init(args: argparse.Namespace) -> int:
    """``djdask jobs init MODULE``: create the jobs table of every auto-populated table (run once
    by a user who may create tables; campaigns then need no CREATE privilege)."""
    from datajoint.jobs import Job

    from djdask.db.connect import connect
    from djdask.errors import InvalidInputError
    from djdask.jobs.queue import _declared_jobs
    from djdask.planning.planner import select
    from djdask.planning.reservable import has_jobs_table

    if args.module != "init":
        raise InvalidInputError(
            f"`djdask jobs {args.module} {args.init}`: write `djdask jobs MODULE` to list jobs rows, or "
            "`djdask jobs init MODULE` to create the jobs tables."
        )
    connect()
    selection = select(args.init)
    schemas = set()
    for name in selection.graph.order:
        cls = selection.tables[name]
        if not has_jobs_table(cls):
            continue
        table = cls()
        existed = Job(table).is_declared  # reading `table.jobs` would create it
        jobs = _declared_jobs(table)
        schemas.add(table.database)
        print(f"{selection.graph.class_names[name]}: {jobs.full_table_name} {'exists' if existed else 'created'}")
    from djdask.records.records import Records, home_schema

    records = Records(selection.connection, home_schema(selection.tables))
    print(f"Campaign records: {records.name} {'created' if records.ensure() else 'exists'}")
    schemas.add(records.schema)
    print(
        f"\nCampaigns on {args.init} need SELECT, INSERT, UPDATE and DELETE on the schemas "
        f"{', '.join(sorted(schemas)) or '(none)'} (see the README's Security section)."
    )
    return 0


def retry(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.jobs.queue import JobQueue
    from djdask.planning.planner import select

    connect()
    selection = select(args.module)
    from djdask.planning.reservable import has_jobs_table

    total = 0
    for name in selected_tables(selection, args.table):
        if not has_jobs_table(selection.tables[name]):
            continue  # no jobs table, no error rows: its failed keys are missing, and made by the next campaign
        count = JobQueue(selection.tables[name]()).retry_errors()
        total += count
        if count:
            print(f"{selection.graph.class_names[name]}: {count} error row(s) back to pending")
    print(f"{total} key(s) will be retried by the next campaign.")
    return 0


def release(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.jobs.leases import lease_timeout, recover_orphans
    from djdask.planning.planner import existing_jobs, select

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
    from djdask.db.connect import secrets
    from djdask.records.records import Records, home_schema

    for record in Records(connection, home_schema(selection.tables)).mark_lost(secrets([connection])):
        print(f"Campaign {record['campaign']} ({record['user']} on {record['host']}) stopped beating: marked lost.")
    return 0


def ignore(args: argparse.Namespace) -> int:
    from djdask.db.connect import connect
    from djdask.errors import RestrictionError
    from djdask.jobs.queue import JobQueue
    from djdask.planning.planner import parse_restrictions, select
    from djdask.planning.reservable import why_unreserved

    connect()
    selection = select(args.module)
    name = selection.graph.resolve(args.table)
    cls = selection.tables[name]
    class_name = selection.graph.class_names[name]
    reason = why_unreserved(cls)
    if reason is not None:
        raise RestrictionError(
            f"{class_name} has no jobs table ({reason}), so it has no "
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


def clusters(args: argparse.Namespace) -> int:
    import yaml

    from djdask.clusters import profile_names, resolve
    from djdask.errors import ProfileError

    if args.action == "list":
        rows = [{"profile": n, "kind": resolve(n).raw.get("kind")} for n in profile_names()]
        print_table(rows, ["profile", "kind"])
        return 0
    if not args.profile:
        raise ProfileError(f"`djdask clusters {args.action}` needs a profile name: djdask clusters {args.action} slurm")
    profile = resolve(args.profile)
    if args.action == "show":
        print(yaml.safe_dump({args.profile: profile.shown()}, sort_keys=False).rstrip())
    elif not hasattr(profile.kind, "script"):
        raise ProfileError(f"Profile {args.profile!r} is of kind {profile.kind.name!r}, which submits no job script.")
    elif getattr(args, "controller", None) is not None:
        if profile.kind.name != "kubernetes":
            raise ProfileError(
                f"--controller: profile {args.profile!r} is {profile.kind.name}; on a batch system the "
                f"controller is a job of `djdask submit MODULE --cluster {args.profile}`."
            )
        print(profile.kind.script(args.profile, profile.raw, controller=_controller_args(args.controller)), end="")
    elif getattr(args, "scheduler", None):
        if not re.match(r"^(tcp|tls)://[^/:]+:\d+$", args.scheduler):
            raise InvalidInputError(
                f"--scheduler {args.scheduler!r} is not a scheduler address: write it as tcp://HOST:PORT "
                "(or tls://HOST:PORT), as a campaign prints it on its `Scheduler:` line."
            )
        if not hasattr(profile.kind, "submit_command"):
            raise ProfileError(
                f"--scheduler: profile {args.profile!r} ({profile.kind.name}) starts its own scheduler in the "
                "cluster; the option is for batch profiles."
            )
        print(profile.kind.script(args.profile, profile.raw, scheduler=args.scheduler))
    else:
        print(profile.kind.script(args.profile, profile.raw))
    return 0


def _controller_args(text: str) -> list[str]:
    """``djdask populate`` arguments of a Kubernetes controller, checked as populate checks them."""
    import shlex

    from djdask.cli.parser import build_parser

    try:
        words = shlex.split(text)
    except ValueError as err:
        raise InvalidInputError(
            f"--controller {text!r}: {err}. Quote it as one argument: 'MODULE [OPTIONS]'."
        ) from None
    if not words or words[0].startswith("-"):
        raise InvalidInputError(
            "--controller needs the pipeline module first, then populate's options: "
            "--controller 'mylab.pipeline --target Segmentation'."
        )
    if any(w == "--cluster" or w.startswith("--cluster=") for w in words):
        raise InvalidInputError(
            "--controller: leave --cluster out; the controller runs on the profile you name "
            "(djdask clusters script PROFILE --controller ...)."
        )
    build_parser().parse_args(["populate", *words])  # a wrong option stops here, as populate would
    return words


def config(args: argparse.Namespace) -> int:
    from djdask.config import schema as settings

    if args.markdown:
        print(settings.markdown(), end="")
        return 0
    from djdask.db.connect import redact, secrets

    known = secrets()
    rows = []
    for path, _spec in settings.leaves():
        value = settings.settings()
        for part in path.split(".")[1:]:
            value = (value or {}).get(part) if isinstance(value, dict) else None
        if path == "djdask.clusters":  # profiles may hold secrets: `djdask clusters show` masks them
            value = sorted(value or {})
        value = settings.shown(path, value)
        where = settings.source(path)
        rows.append(
            {"setting": path, "value": redact(json.dumps(value, default=str), known), "set in": where or "default"}
        )
    print_table(rows, ["setting", "value", "set in"])
    print("\nAll settings fit their schema. Their meanings: djdask config --markdown (docs/settings.md).")
    return 0


def db(args: argparse.Namespace) -> int:
    from djdask.db.connect import EmbeddedPostgres

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
