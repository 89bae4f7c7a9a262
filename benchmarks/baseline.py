"""The other side of each benchmark: what users run today, in processes of its own.

``python -m benchmarks.baseline ROLE ...`` is started by :mod:`benchmarks.cases`
with the server's ``DJ_*`` variables and a schema prefix of its own:

- ``declare MODULE TABLE...``: import the pipeline (which declares its tables),
  create the tables' jobs tables, and with ``--demo SCALE`` insert the reference
  pipeline's manual rows.  Run once, before any racer starts.
- ``populate MODULE TABLE... [--direct [--where SQL]]``: DataJoint's own
  ``Table.populate(reserve_jobs=True)`` for each table in the order given, as a
  user's script runs it; with ``--direct``, ``populate()`` without jobs tables
  (DataJoint's own cost per key), restricted by ``--where`` so that several
  direct processes can split the keys between them.
- ``insert --schema S --table T --keys N --worker I --workers W``: the ceiling,
  one ``INSERT`` and one ``COMMIT`` per key on a plain driver connection, for
  keys ``I, I+W, I+2W, ...`` below ``N``.

The racing roles (``populate``, ``insert``) import and connect first, print
``ready``, wait for a line on stdin and only then start, so that the clock of
:class:`benchmarks.cases.sides.Racers` covers the work and not Python's start-up.
They end with one line ``RESULT {json}`` holding their start and end times.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time

__all__ = ["main"]

READY = "ready"
RESULT = "RESULT "


def _wait_for_go() -> float:
    print(READY, flush=True)
    sys.stdin.readline()
    return time.time()


def _report(**fields) -> None:
    print(RESULT + json.dumps(fields), flush=True)


def _tables(module_name: str, names: list[str]) -> list[type]:
    from djdask.db.connect import import_datajoint

    import_datajoint()
    logging.getLogger("datajoint").setLevel(logging.WARNING)
    module = importlib.import_module(module_name)
    return [getattr(module, name) for name in names]


def _declare(args: argparse.Namespace) -> None:
    tables = _tables(args.module, args.tables)
    if args.demo:
        from djdask.pipeline.demo import insert_demo_data

        insert_demo_data(args.demo)
    for table in tables:
        table().jobs  # noqa: B018  (DataJoint declares the jobs table on first access)


def _populate(args: argparse.Namespace) -> None:
    tables = _tables(args.module, args.tables)
    tables[0]().connection.ping()
    start = _wait_for_go()
    made, errors, per_table = 0, 0, {}
    for table in tables:
        restriction = (args.where,) if args.where else ()
        result = table.populate(*restriction, reserve_jobs=not args.direct, suppress_errors=True)
        made += result["success_count"]
        errors += len(result["error_list"])
        per_table[table.__name__] = time.time()
    _report(start=start, end=time.time(), made=made, errors=errors, ended=per_table)


def _insert(args: argparse.Namespace) -> None:
    from tests.services import SqlClient

    client = SqlClient(dict(os.environ))
    conn = client.conn
    if client.backend == "postgresql":
        conn.autocommit = False
    else:
        conn.autocommit(False)
    sql = f"INSERT INTO {client.table(args.schema, args.table)} (k, v) VALUES (%s, %s)"
    cursor = conn.cursor()
    start = _wait_for_go()
    done = 0
    for k in range(args.worker, args.keys, args.workers):
        cursor.execute(sql, (k, k))
        conn.commit()
        done += 1
    _report(start=start, end=time.time(), made=done, errors=0)
    client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("declare")
    p.add_argument("module")
    p.add_argument("tables", nargs="+")
    p.add_argument("--demo", metavar="SCALE")
    p.set_defaults(func=_declare)
    p = sub.add_parser("populate")
    p.add_argument("module")
    p.add_argument("tables", nargs="+")
    p.add_argument("--direct", action="store_true", help="populate() without jobs tables")
    p.add_argument("--where", metavar="SQL", help="restrict the keys (direct processes that split the keys)")
    p.set_defaults(func=_populate)
    p = sub.add_parser("insert")
    p.add_argument("--schema", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.set_defaults(func=_insert)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
