"""The commands on campaign records: ``djdask campaigns``, ``cancel`` and ``report``.

They read and write the records of :mod:`djdask.records.records`; ``cancel`` and
``report`` need only the database (a campaign id is unique in it), ``campaigns``
the pipeline module, whose first schema holds its records.

The records' times are UTC (:mod:`djdask.db.clock`), and so is every time these
commands print: the listing's headings and the report say so, and ``--json``
gives them as ISO 8601 with ``+00:00``.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes, format_time, parse_timedelta

from djdask.cli.output import print_table
from djdask.config import namespace as config
from djdask.db import clock
from djdask.db.connect import connect, secrets
from djdask.errors import DjdaskError, InvalidInputError
from djdask.planning.loader import load_pipeline
from djdask.planning.planner import existing_jobs, select
from djdask.records.records import ENDED, Records, find, home_schema, is_following, shown_state

if TYPE_CHECKING:
    import argparse

__all__ = ["campaigns", "cancel", "jobs_of_campaign", "no_figures", "owner_windows", "report"]


def _connection(module: str | None) -> Any:
    """A connection to the pipeline database: DataJoint's settings (or the embedded
    server), else, in DataJoint's thread-safe mode, the pipeline module's own."""
    connection = connect()
    if connection is not None:
        return connection
    if not module:
        raise InvalidInputError(
            "DataJoint runs in thread-safe mode: the database settings come with the pipeline. "
            "Name its module too, e.g. `djdask cancel ID mylab.pipeline`."
        )
    return next(iter(load_pipeline(module).tables.values()))().connection


def duration(record: dict[str, Any], now: datetime.datetime) -> float:
    """Seconds a campaign ran (to ``now``, the server's time in UTC, while it runs; to its
    last heartbeat while it waits to start), never negative."""
    end = record["ended"] or (now if record["state"] == "running" else record["heartbeat"])
    return max(0.0, (clock.naive_utc(end) - clock.naive_utc(record["started"])).total_seconds())


def _iso(value: datetime.datetime) -> str:
    return clock.naive_utc(value).replace(tzinfo=datetime.timezone.utc).isoformat(sep=" ", timespec="milliseconds")


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    plain = {k: (_iso(v) if isinstance(v, datetime.datetime) else v) for k, v in record.items()}
    return {**plain, "state": shown_state(record)}


def following_text(record: dict[str, Any]) -> str:
    """``following``, and when a following campaign last found work (or that it has found none)."""
    if not is_following(record):
        return record["state"]
    found = ((record.get("accounting") or {}).get("following") or {}).get("last_found")
    if not found:
        return "following (no new work yet)"
    ago = format_time(max(0.0, time.time() - found))
    return f"following (found work {ago} ago)"


def campaigns(args: argparse.Namespace) -> int:
    """``djdask campaigns MODULE``: running and past campaigns of a pipeline, newest first."""
    selection = select(args.module)
    records = Records(selection.connection, home_schema(selection.tables))
    if not records.exists():
        print(f"No campaign of {args.module} has run yet (no {records.name}).")
        return 0
    records.mark_lost(secrets([selection.connection]))  # whoever notices first tells
    q = records.q
    rows = records.rows(f"{q('module')} = %s", (args.module,), limit=args.limit)
    if args.json:
        json.dump([_plain(r) for r in rows], sys.stdout, indent=2, default=str)
        print()
        return 0
    now = records.now()
    table = [
        {
            "id": r["campaign"],
            "state": following_text(r),
            "user": r["user"],
            "host": r["host"],
            "started (UTC)": clock.utc_text(r["started"]),
            "duration": format_time(duration(r, now)),
            "made": r["keys_made"],
            "errors": r["errors"],
            "code": r["code_version"] or "-",
        }
        for r in rows
    ]
    print_table(table, ["id", "state", "user", "host", "started (UTC)", "duration", "made", "errors", "code"])
    return 0


def cancel(args: argparse.Namespace) -> int:
    """``djdask cancel ID``: ask a campaign to stop (its controller sees it within seconds and
    stops as on Ctrl-C); a submitted one whose controller has not started is cancelled now."""
    connection = _connection(args.module)
    records, record = find(connection, args.id)
    campaign = record["campaign"]
    if record["state"] in ENDED:
        print(f"Campaign {campaign} has already ended: {record['state']}.")
        return 0
    if record["state"] == "submitted":
        records.update(campaign, ("submitted",), cancel_requested="now", state="cancelled", ended="now", exit_code=130)
        print(f"Campaign {campaign} cancelled before its controller ran.")
        if record["job_id"]:
            _cancel_job(record)
        return 0
    records.update(campaign, ("running",), cancel_requested="now")
    print(f"Asked campaign {campaign} ({record['user']} on {record['host']}, pid {record['pid']}) to stop.", flush=True)
    if args.no_wait:
        return 0
    poll = float(parse_timedelta(config.get("campaign.cancel-poll")))
    grace = float(parse_timedelta(config.get("campaign.grace-period")))
    deadline = time.monotonic() + poll + grace + 60
    while time.monotonic() < deadline:
        time.sleep(min(1.0, poll))
        state = (records.get(campaign) or {}).get("state")
        if state != "running":
            print(f"Campaign {campaign} stopped: {state}.")
            return 0
    print(
        f"Campaign {campaign} has not stopped yet; it will once its running keys end (djdask campaigns shows it).",
        file=sys.stderr,
    )
    return 1


def _cancel_job(record: dict[str, Any]) -> None:
    """Cancel a submitted controller's batch job, when its batch system is on this machine."""
    # lazy: the batch systems' registry (10-25 ms to import) only to cancel a job not started yet
    from djdask.cli.submit import cancel_command

    kind = (record.get("clusters") or {}).get("controller") or ""
    command = cancel_command(kind)
    if command and shutil.which(command):
        done = subprocess.run([command, str(record["job_id"])], capture_output=True, text=True)
        if done.returncode == 0:
            print(f"Its batch job {record['job_id']} was cancelled ({command}).")
            return
    print(f"Its batch job {record['job_id']} exits as soon as it starts.")


def owner_windows(
    owners: list[dict[str, Any]], ended: datetime.datetime | None
) -> list[tuple[str, int, datetime.datetime, datetime.datetime | None]]:
    """Each controller's host and pid, and when it held the campaign's keys, in the clock the
    jobs tables' times are written in (its session's): from its start to the next one's
    start, or to the campaign's end (``None`` while it runs: no end).

    ``owners`` are the record's: ``started`` in UTC and ``session_utc_offset`` the seconds
    the session's clock was ahead of UTC.  Owners written by earlier djdask versions have no
    offset: their ``started``, and the record's ``ended``, are in the session's clock already.
    """

    def stored(text: str) -> datetime.datetime:
        # An earlier version's start on PostgreSQL carries its session's zone: its wall time
        # is the session's clock.
        return datetime.datetime.fromisoformat(str(text)).replace(tzinfo=None)

    windows = []
    for number, owner in enumerate(owners):
        offset = datetime.timedelta(seconds=int(owner.get("session_utc_offset") or 0))
        if number + 1 < len(owners):
            until: datetime.datetime | None = stored(owners[number + 1]["started"]) + offset
        else:
            until = None if ended is None else clock.naive_utc(ended) + offset
        windows.append((owner["host"], int(owner["pid"]), stored(owner["started"]) + offset, until))
    return windows


def jobs_of_campaign(connection: Any, record: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    """Rows of the pipeline's jobs tables that the campaign's controllers held (their host and
    pid, between each one's start and the next one's, or the campaign's end: :func:`owner_windows`),
    by table and status; None when the module cannot be imported here."""
    try:
        selection = select(record["module"])
    except DjdaskError:
        return None
    q = connection.adapter.quote_identifier
    windows, args = [], []
    when = f"COALESCE({q('completed_time')}, {q('reserved_time')})"
    for host, pid, since, until in owner_windows(record.get("owners") or [], record["ended"]):
        window = f"{q('host')} = %s AND {q('pid')} = %s AND {when} >= %s"
        args += [host, pid, since]
        if until is not None:
            window += f" AND {when} <= %s"
            args.append(until)
        windows.append(f"({window})")
    counts: dict[str, dict[str, int]] = {}
    for name, jobs in existing_jobs(selection.tables, selection.graph.order):
        rows = (
            connection.query(
                f"SELECT {q('status')}, COUNT(*) FROM {jobs.full_table_name} WHERE {' OR '.join(windows)} "
                f"GROUP BY {q('status')}",
                args=tuple(args),
            ).fetchall()
            if windows
            else []
        )
        counts[selection.graph.class_names[name]] = {str(status): int(n) for status, n in rows}
    return counts


def report(args: argparse.Namespace) -> int:
    """``djdask report ID``: a campaign's record and accounting, per table and per pool."""
    connection = _connection(args.module)
    records, record = find(connection, args.id)
    account = record.get("accounting") or {}
    jobs = jobs_of_campaign(connection, record)
    if args.json:
        json.dump({**_plain(record), "jobs_tables": jobs}, sys.stdout, indent=2, default=str)
        print()
        return 0
    clusters = ", ".join(f"{k}={v}" for k, v in (record.get("clusters") or {}).items())
    print(f"Campaign {record['campaign']} of {record['module']}: {following_text(record)}", end="")
    print(f" (exit code {record['exit_code']})" if record["exit_code"] is not None else "")
    print(f"  user {record['user']} on {record['host']}, pid {record['pid']}; pools {clusters or '-'}")
    print(
        f"  code {record['code_version'] or '-'}; djdask {record['djdask_version']}, "
        f"DataJoint {record['datajoint_version']}"
    )
    seconds = format_time(duration(record, records.now()))
    if record["ended"] is not None:
        span = f"ended {clock.utc_text(record['ended'], zone=' UTC')} after {seconds}"
    else:
        span = f"running for {seconds}" if record["state"] == "running" else "its controller has not started"
    print(f"  started {clock.utc_text(record['started'], zone=' UTC')}, {span}; controllers: {record['controllers']}")
    if record["targets"] or record["restriction"] not in ("", "{}", {}):
        print(f"  targets {record['targets'] or 'all'}; restriction {record['restriction'] or '{}'}")
    if record["dashboard"]:
        print(f"  dashboard {record['dashboard']}")
    print()
    tables = []
    for t in account.get("tables") or []:
        name = t["table"]
        m = t.get("make_seconds") or {}
        held = (jobs or {}).get(name, {})
        tables.append(
            {
                "table": name,
                "made": t.get("made", 0),
                "errors": t.get("errors", 0),
                "retries": t.get("retries", 0),
                "busy": format_time(t.get("busy_seconds") or 0.0),
                "make() min/p50/p95/max": "/".join(
                    "-" if m.get(k) is None else format_time(m[k]) for k in ("min", "p50", "p95", "max")
                ),
                "peak memory": format_bytes(t.get("peak_memory") or 0),
                "jobs rows": ", ".join(f"{k} {v}" for k, v in sorted(held.items())) or "-",
            }
        )
    columns = ["table", "made", "errors", "retries", "busy", "make() min/p50/p95/max", "peak memory", "jobs rows"]
    if tables:
        print_table(tables, columns)
    else:  # not headings over no rows
        print(no_figures(record))
    pools = []
    for p in account.get("pools") or []:
        name = p["pool"]
        pools.append(
            {
                "pool": name,
                "profile": p.get("profile"),
                "worker time": format_time(p.get("worker_seconds") or 0.0),
                "busy": format_time(p.get("busy_seconds") or 0.0),
                "idle": format_time(p.get("idle_seconds") or 0.0),
                "peak memory": format_bytes(p.get("peak_memory") or 0),
                "jobs": p.get("jobs_submitted", "-"),
                "node-hours requested": p.get("node_hours_requested", "-")
                if p.get("node_hours_requested") is not None
                else "-",
            }
        )
    if pools:
        print()
        print_table(
            pools, ["pool", "profile", "worker time", "busy", "idle", "peak memory", "jobs", "node-hours requested"]
        )
    if jobs is None:
        print(f"\n(jobs-table rows not counted: {record['module']} cannot be imported here)")
    return 0


def no_figures(record: dict[str, Any]) -> str:
    """What the report says of a campaign with no tables in its accounting yet (or ever)."""
    if record["state"] == "submitted":
        return "Starting: its controller has not started yet; figures come once it runs."
    if record["state"] == "running":
        beat = format_time(parse_timedelta(config.get("campaign.heartbeat")))
        return f"Starting: no figures yet; the campaign records them with its heartbeat, every {beat}."
    return "No figures: the campaign ended before it recorded any."
