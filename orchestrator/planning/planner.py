"""What a campaign would do: restrictions checked against headings, missing keys counted in SQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from djdask.db.connect import connect, redact, secrets
from djdask.errors import RestrictionError
from djdask.planning.graph import PipelineGraph, build_graph
from djdask.planning.inputs import hidden_inputs
from djdask.planning.loader import load_pipeline
from djdask.planning.reservable import has_jobs_table

__all__ = [
    "PlanRow",
    "Selection",
    "error_groups",
    "existing_jobs",
    "parse_restrictions",
    "plan",
    "reservation_holders",
    "restrict",
    "select",
    "table_counts",
]


@dataclass(frozen=True)
class PlanRow:
    """One table of a plan."""

    table: str
    full_name: str
    tier: str
    depth: int
    total: int
    missing: int
    reserved: bool = True  # False: no jobs table can hold its keys; it runs unreserved
    ignored: int = 0  # missing keys marked ``ignore`` in its jobs table: no campaign makes them

    @property
    def note(self) -> str:
        return "" if self.reserved else "unreserved (no jobs table)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _convert(value: str, attr: Any) -> Any:
    if attr.uuid:
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            raise RestrictionError(
                f"Restriction {attr.name}={value!r}: {attr.name} is a uuid but {value!r} is not one. "
                f"Give it as 32 hex digits, dashes optional, e.g. -r {attr.name}=12345678-1234-5678-1234-567812345678."
            ) from None
    if attr.numeric:
        try:
            number = float(value.strip())
        except ValueError:
            raise RestrictionError(
                f"Restriction {attr.name}={value!r}: {attr.name} is numeric ({attr.type}) "
                f"but {value!r} is not a number. Give a number, e.g. -r {attr.name}=1."
            ) from None
        return int(number) if number.is_integer() and "int" in attr.type.lower() else number
    return value


def literal_conditions(expression: Any, restriction: dict[str, Any]) -> list[Any]:
    """``restriction`` as DataJoint conditions that match text values literally on both backends.

    DataJoint writes a text value into SQL with its backslashes doubled, as MySQL
    reads string literals; PostgreSQL (``standard_conforming_strings``, its default)
    reads backslashes as themselves, so there ``-r name=back\\slash`` would match
    ``back\\\\slash``.  Such values go to PostgreSQL as conditions written here, with
    quotes doubled and backslashes kept; every other value as DataJoint's own.
    """
    if not restriction:
        return []
    postgres = expression.connection.adapter.backend == "postgresql"
    plain = {k: v for k, v in restriction.items() if not (postgres and isinstance(v, str) and "\\" in v)}
    conditions: list[Any] = [plain] if plain else []
    for name, value in restriction.items():
        if name not in plain:
            quoted = value.replace("'", "''")
            conditions.append(f"{expression.connection.adapter.quote_identifier(name)} = '{quoted}'")
    return conditions


def restrict(expression: Any, restriction: dict[str, Any]) -> Any:
    """``expression & restriction``, text values matched literally (:func:`literal_conditions`)."""
    for condition in literal_conditions(expression, restriction):
        expression = expression & condition
    return expression


def parse_restrictions(pairs: Sequence[str], graph: PipelineGraph, tables: dict[str, type]) -> dict[str, Any]:
    """Turn ``ATTR=VALUE`` strings into a restriction dict, checked against the tables' keys.

    An attribute is accepted when it belongs to the key source of at least one
    table of ``graph``; values are converted to the attribute's type.  Never
    raw SQL: only attribute names seen in the headings get through.
    """
    if not pairs:
        return {}  # nothing to check: no table's key source needs building
    sources = [tables[n]().key_source for n in graph.order]
    known: dict[str, Any] = {}
    for ks in sources:
        for name in ks.heading.names:
            known.setdefault(name, ks.heading[name])
    restriction: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise RestrictionError(f"Restriction {pair!r} is not of the form ATTR=VALUE. Write it like -r mouse_id=3.")
        if name not in known:
            listing = ", ".join(sorted(known)) or "(none)"
            raise RestrictionError(
                f"Unknown restriction attribute {name!r}: no selected table's key has it. "
                f"Restrict by one of: {listing}."
            )
        restriction[name] = _convert(value, known[name])  # text as given: a literal, spaces and all
    return restriction


def plan(graph: PipelineGraph, tables: dict[str, type], restriction: dict[str, Any]) -> list[PlanRow]:
    """Count total and missing keys per table, in dependency order; changes nothing."""
    rows = []
    for info in graph:
        table = tables[info.full_name]()
        names = set(table.key_source.heading.names)
        own = {k: v for k, v in restriction.items() if k in names}
        missing, total = table.progress(*literal_conditions(table, own))
        reserved = has_jobs_table(table)
        ignored = _ignored_missing(table, own) if reserved else 0
        rows.append(
            PlanRow(info.class_name, info.full_name, info.tier, info.depth, int(total), int(missing), reserved, ignored)
        )
    return rows


def _ignored_missing(table: Any, restriction: dict[str, Any]) -> int:
    """Missing keys of ``table`` whose jobs rows say ``ignore`` (none when it has no jobs table yet)."""
    from datajoint.jobs import Job  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    jobs = Job(table)
    if not jobs.is_declared:
        return 0
    # Most jobs tables hold no ignore row: one indexed look, not the heading a query needs
    # (200 tables: 1.4 s of `djdask plan`).
    status = table.connection.adapter.quote_identifier("status")
    if not table.connection.query(f"SELECT 1 FROM {jobs.full_table_name} WHERE {status} = 'ignore' LIMIT 1").fetchall():
        return 0
    source = restrict(table.key_source, restriction)
    missing = source.proj() - table.proj()
    return len((jobs & "status = 'ignore'").restrict(missing, semantic_check=False))


def table_counts(graph: PipelineGraph, tables: dict[str, type]) -> list[dict[str, Any]]:
    """Per table: rows in the table and jobs by status, read without creating anything."""
    from datajoint.jobs import Job  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    out = []
    for info in graph:
        table = tables[info.full_name]()
        jobs_table = has_jobs_table(table)
        # zeros when the jobs table does not exist yet, or cannot (the table runs unreserved)
        counts = Job(table).progress() if jobs_table else dict.fromkeys(("pending", "reserved", "error", "ignore"), 0)
        out.append(
            {
                "table": info.class_name,
                "full_name": info.full_name,
                "rows": len(table),
                "pending": counts["pending"],
                "reserved": counts["reserved"],
                "error": counts["error"],
                "ignore": counts["ignore"],
                "jobs_table": jobs_table,
            }
        )
    return out


def existing_jobs(tables: dict[str, type], names: Sequence[str]):
    """``(name, Job)`` for each of ``names`` whose jobs table exists; none is created."""
    from datajoint.jobs import Job  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    for name in names:
        if not has_jobs_table(tables[name]):
            continue
        jobs = Job(tables[name]())
        if jobs.is_declared:
            yield name, jobs


def reservation_holders(graph: PipelineGraph, tables: dict[str, type]) -> list[dict[str, Any]]:
    """Who holds reserved keys: per (host, pid), the keys, the tables and since when
    (the oldest reservation), read from the jobs tables without creating any."""
    holders: dict[tuple[str, int], dict[str, Any]] = {}
    for name, jobs in existing_jobs(tables, graph.order):
        table = graph.class_names[name]
        for row in (jobs & {"status": "reserved"}).proj("host", "pid", "user", "reserved_time").to_dicts():
            holder = holders.setdefault(
                (row["host"], int(row["pid"] or 0)),
                {
                    "host": row["host"],
                    "pid": int(row["pid"] or 0),
                    "user": row["user"],
                    "keys": 0,
                    "tables": [],
                    "since": row["reserved_time"],
                },
            )
            holder["keys"] += 1
            if table not in holder["tables"]:
                holder["tables"].append(table)
            if row["reserved_time"] is not None and (holder["since"] is None or row["reserved_time"] < holder["since"]):
                holder["since"] = row["reserved_time"]
    return sorted(holders.values(), key=lambda h: (str(h["since"]), h["host"], h["pid"]))


def error_groups(graph: PipelineGraph, tables: dict[str, type], names: Sequence[str] | None = None) -> list[dict]:
    """Error rows grouped per table by message (numbers masked, so messages that differ
    only in a key value group together): count, the first message and its key."""
    known = secrets()  # a make() may have put one in its error message
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for name, jobs in existing_jobs(tables, names or graph.order):
        table = graph.class_names[name]
        rows = (jobs & {"status": "error"}).proj("error_message").to_dicts(order_by=["scheduled_time"])
        for row in rows:
            message = redact((row["error_message"] or "").strip(), known)
            shape = re.sub(r"\d+(\.\d+)?", "N", message.splitlines()[0] if message else "")
            group = groups.setdefault(
                (table, shape),
                {"table": table, "count": 0, "message": message, "example_key": {k: row[k] for k in jobs.primary_key}},
            )
            group["count"] += 1
    return sorted(groups.values(), key=lambda g: (g["table"], -g["count"]))


@dataclass
class Selection:
    """A loaded pipeline cut to the user's targets, with a checked restriction."""

    module_name: str
    tables: dict[str, type]
    graph: PipelineGraph
    restriction: dict[str, Any]
    targets: tuple[str, ...] = ()

    @property
    def connection(self) -> Any:
        """The pipeline's own DataJoint connection (thread-safe mode has no global one)."""
        return next(iter(self.tables.values()))().connection


def select(module_name: str, targets: Sequence[str] = (), restrictions: Sequence[str] | dict = ()) -> Selection:
    """Load ``module_name``, build its DAG from the database, cut it to ``targets``,
    and check ``restrictions`` (``ATTR=VALUE`` strings, or an already typed dict).

    The database is chosen first, as the command line chooses it (DataJoint's
    settings, else the embedded PostgreSQL), since importing a pipeline connects.
    """
    connect()
    loaded = load_pipeline(module_name)
    auto = loaded.auto_populated()
    names = {n: cls.__name__ for n, cls in loaded.tables.items()}
    # The pipeline's own connection: in DataJoint's thread-safe mode there is no global one.
    connection = next(iter(loaded.tables.values()))().connection
    # Tables a key_source names, and those users declared, order the campaign as foreign keys do.
    graph = build_graph(connection, loaded.schemas, names).with_inputs(*hidden_inputs(auto)).cut(list(targets))
    if isinstance(restrictions, dict):
        restriction = parse_restrictions([f"{k}={v}" for k, v in restrictions.items()], graph, auto)
    else:
        restriction = parse_restrictions(restrictions, graph, auto)
    return Selection(module_name, auto, graph, restriction, tuple(targets))
