"""DataJoint 0.x's schema-wide ``~jobs`` tables: never touched, refused while in use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from djdask.errors import JobsTableError

__all__ = ["check_legacy_jobs", "legacy_jobs_tables"]


def legacy_jobs_tables(connection: Any, schemas: Iterable[str]) -> list[dict[str, Any]]:
    """Find DataJoint 0.x schema-wide ``~jobs`` tables in ``schemas``, without changing them.

    Returns one dict per table found: ``schema``, ``rows`` and ``reserved``
    (rows its old-style workers hold right now).
    """
    q = connection.adapter.quote_identifier
    found = []
    for schema in sorted(schemas):
        exists = connection.query(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = '~jobs'",
            args=(schema,),
        ).fetchone()[0]
        if not exists:
            continue
        counts = dict(
            connection.query(
                f"SELECT {q('status')}, COUNT(*) FROM {q(schema)}.{q('~jobs')} GROUP BY {q('status')}"
            ).fetchall()
        )
        found.append({"schema": schema, "rows": int(sum(counts.values())), "reserved": int(counts.get("reserved", 0))})
    return found


def check_legacy_jobs(connection: Any, schemas: Iterable[str]) -> list[str]:
    """Refuse to run beside live DataJoint 0.x workers; return warnings for idle legacy tables.

    A legacy ``~jobs`` table is never read or written by djdask.  Workers of
    DataJoint < 2 reserve keys there and would not see djdask's reservations,
    so reserved rows in it stop the campaign.
    """
    warnings_ = []
    for found in legacy_jobs_tables(connection, schemas):
        where = f"{found['schema']}.~jobs"
        if found["reserved"]:
            raise JobsTableError(
                f"Schema {found['schema']!r} has a legacy DataJoint 0.x jobs table `~jobs` with "
                f"{found['reserved']} reserved row(s): workers of an older DataJoint are running and do "
                "not see the per-table jobs tables (~~table) that DataJoint 2.x and djdask use. Stop "
                f"them, or clear their reservations in {where}, then retry; djdask has not changed it."
            )
        warnings_.append(
            f"Schema {found['schema']!r} still has a legacy DataJoint 0.x jobs table `~jobs` "
            f"({found['rows']} rows). djdask ignores it and leaves it unchanged; drop it once no "
            "DataJoint < 2 worker uses it."
        )
    return warnings_
