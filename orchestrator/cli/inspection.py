"""The commands that read a pipeline's state: ``djdask plan``, ``status`` and ``errors``.

They read the database and change nothing; none imports the campaign loop.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from djdask.cli.output import key_text, print_table
from djdask.db.connect import connect
from djdask.djcompat import dependencies_loaded_once
from djdask.planning import planner
from djdask.planning.reservable import why_unreserved

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from djdask.planning.planner import Selection

__all__ = ["errors", "plan", "selected_tables", "status"]


def selected_tables(selection: Selection, names: Sequence[str]) -> list[str]:
    """The full names of the tables ``names`` (class names) of ``selection``; all of them in
    order when ``names`` is empty."""
    if not names:
        return list(selection.graph.order)
    return [selection.graph.resolve(n) for n in names]


def plan(args: argparse.Namespace) -> int:
    """``djdask plan MODULE``: the tables in order with their missing keys; changes nothing."""
    connect()
    selection = planner.select(args.module, args.target, args.restrict)
    with dependencies_loaded_once(selection.connection):
        planned = planner.plan(selection.graph, selection.tables, selection.restriction)
    rows = [r.as_dict() for r in planned]
    if args.json:
        print(json.dumps({"module": args.module, "restriction": selection.restriction, "tables": rows}, default=str))
    else:
        print_table(
            [{**r.as_dict(), "note": r.note} for r in planned],
            ["table", "tier", "depth", "total", "missing", "ignored", "note"],
        )
        if any(not r.reserved for r in planned):
            reasons = "; ".join(
                f"{r.table}: {why_unreserved(selection.tables[r.full_name])}" for r in planned if not r.reserved
            )
            print(
                f"\nUnreserved tables have no jobs table ({reasons}): one campaign at a time makes their keys, "
                "each after DataJoint's 'already made' check, as DataJoint's populate() does."
            )
    return 0


def status(args: argparse.Namespace) -> int:
    """``djdask status MODULE``: per table its rows and jobs, and who holds reservations."""
    connect()
    selection = planner.select(args.module)
    with dependencies_loaded_once(selection.connection):
        rows = planner.table_counts(selection.graph, selection.tables)
        holders = planner.reservation_holders(selection.graph, selection.tables)
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
    """``djdask errors MODULE``: error rows grouped by message, with an example key."""
    connect()
    selection = planner.select(args.module)
    names = selected_tables(selection, args.table) if args.table else None
    groups = planner.error_groups(selection.graph, selection.tables, names)
    if args.json:
        print(json.dumps({"module": args.module, "errors": groups}, default=str))
        return 0
    if not groups:
        print("No error rows.")
        return 0
    for g in groups:
        print(f"{g['table']}: {g['count']} x {g['message'].splitlines()[0][:200] if g['message'] else ''}")
        print(f"    e.g. {key_text(g['example_key'])}")
    print(
        f"\n{sum(g['count'] for g in groups)} error row(s). Details: djdask jobs {args.module} --status error; "
        f"retry: djdask retry {args.module}"
    )
    return 0
