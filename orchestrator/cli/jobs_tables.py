"""The commands on DataJoint's jobs tables: ``djdask jobs`` (and ``jobs init``), ``retry``,
``release`` and ``ignore``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from datajoint.jobs import Job

from djdask.cli.inspection import selected_tables
from djdask.cli.output import key_text, print_table
from djdask.db.connect import connect, redact, secrets
from djdask.errors import InvalidInputError, RestrictionError
from djdask.jobs.leases import lease_timeout, recover_orphans
from djdask.jobs.queue import JobQueue, declared_jobs
from djdask.planning.planner import existing_jobs, parse_restrictions, select
from djdask.planning.reservable import has_jobs_table, why_unreserved
from djdask.records.records import Records, home_schema

if TYPE_CHECKING:
    import argparse

__all__ = ["ignore", "jobs", "jobs_init", "release", "retry"]


def jobs(args: argparse.Namespace) -> int:
    """``djdask jobs MODULE``: the rows of the pipeline's jobs tables, secrets masked in their
    error messages; ``djdask jobs init MODULE`` is :func:`jobs_init`."""
    if args.init is not None:
        return jobs_init(args)
    connect()
    selection = select(args.module)
    columns = ["status", "priority", "scheduled_time", "reserved_time", "host", "pid", "connection_id", "error_message"]
    rows = []
    for name, table_jobs in existing_jobs(selection.tables, selected_tables(selection, args.table)):
        query = table_jobs & {"status": args.status} if args.status else table_jobs
        for row in query.to_dicts(order_by=["priority", "scheduled_time"], limit=args.limit):
            key = {k: row[k] for k in table_jobs.primary_key}
            rows.append({"table": selection.graph.class_names[name], "key": key, **{c: row[c] for c in columns}})
    known = secrets()  # a make() may have put one in its error message
    for row in rows:
        row["error_message"] = redact(row["error_message"] or "", known) or None
    if args.json:
        print(json.dumps({"module": args.module, "jobs": rows}, default=str))
        return 0
    for row in rows:
        row["key"] = key_text(row["key"])
        row["error_message"] = (row["error_message"] or "")[:60]
        row["reserved_time"] = row["reserved_time"] or ""
    print_table(rows, ["table", "key", *columns])
    return 0


def jobs_init(args: argparse.Namespace) -> int:
    """``djdask jobs init MODULE``: create the jobs table of every auto-populated table (run once
    by a user who may create tables; campaigns then need no CREATE privilege)."""
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
        table_jobs = declared_jobs(table)
        schemas.add(table.database)
        print(f"{selection.graph.class_names[name]}: {table_jobs.full_table_name} {'exists' if existed else 'created'}")
    records = Records(selection.connection, home_schema(selection.tables))
    print(f"Campaign records: {records.name} {'created' if records.ensure() else 'exists'}")
    schemas.add(records.schema)
    print(
        f"\nCampaigns on {args.init} need SELECT, INSERT, UPDATE and DELETE on the schemas "
        f"{', '.join(sorted(schemas)) or '(none)'} (see the README's Security section)."
    )
    return 0


def retry(args: argparse.Namespace) -> int:
    """``djdask retry MODULE``: error rows back to pending, for the next campaign."""
    connect()
    selection = select(args.module)
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
    """``djdask release MODULE``: reservations whose owner is gone back to pending, and
    campaigns that stopped beating marked lost."""
    connect()
    selection = select(args.module)
    connection = selection.connection
    names = {
        table_jobs.full_table_name: selection.graph.class_names[name]
        for name, table_jobs in existing_jobs(selection.tables, selection.graph.order)
    }
    freed = recover_orphans(connection, list(names), lease_timeout=lease_timeout())
    for table, count in freed.items():
        if count:
            print(f"{names[table]}: {count} orphaned reservation(s) back to pending")
    print(f"{sum(freed.values())} orphaned reservation(s) freed.")
    for record in Records(connection, home_schema(selection.tables)).mark_lost(secrets([connection])):
        print(f"Campaign {record['campaign']} ({record['user']} on {record['host']}) stopped beating: marked lost.")
    return 0


def ignore(args: argparse.Namespace) -> int:
    """``djdask ignore MODULE --table T``: missing keys of ``T`` marked ``ignore``, as
    DataJoint's ``jobs.ignore(key)`` marks them."""
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
