"""The times djdask keeps: its own records in UTC, the jobs tables in session time.

A ``datetime(3)`` column holds no time zone (MySQL ``DATETIME``, PostgreSQL
``timestamp without time zone``), and ``CURRENT_TIMESTAMP`` writes the time of
the session's zone into it: MySQL's ``time_zone`` (the server's default unless
a client sets it), PostgreSQL's ``TimeZone`` (the server's, or ``PGTZ`` /
``PGOPTIONS`` of the client).  Two sessions in different zones write different
times for the same instant, and on PostgreSQL ``SELECT CURRENT_TIMESTAMP``
answers a time with a zone (``timestamptz``) that Python cannot subtract from a
column's plain one.

So djdask's own campaign records (:mod:`djdask.records.records`) always store UTC,
written and compared with :func:`utc_now_sql` only; Python reads them as naive
UTC datetimes, and what the commands print of them says ``UTC``.  The jobs
tables (``~~table``) are DataJoint's: their times stay what DataJoint and
djdask write there, in the writer's session time.  To compare a record's time
with them, a record keeps each controller's :func:`session_offset`.
"""

from __future__ import annotations

import datetime
from typing import Any

__all__ = ["naive_utc", "session_now_sql", "session_offset", "utc_now", "utc_now_sql", "utc_text"]


def utc_now_sql(connection: Any) -> str:
    """SQL for the server's current time in UTC, as a plain ``datetime(3)`` value: what
    the campaign records are written and compared with (whatever the session's zone)."""
    if connection.adapter.backend == "postgresql":
        return "(CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')"
    return "UTC_TIMESTAMP(3)"


def session_now_sql(connection: Any) -> str:
    """SQL for the server's current time in the session's zone, as a plain ``datetime(3)``
    value: the clock of ``CURRENT_TIMESTAMP(3)`` written into a jobs table."""
    return "LOCALTIMESTAMP(3)" if connection.adapter.backend == "postgresql" else "CURRENT_TIMESTAMP(3)"


def utc_now(connection: Any) -> datetime.datetime:
    """The server's current time in UTC, naive (as the records' columns give it back)."""
    return naive_utc(connection.query(f"SELECT {utc_now_sql(connection)}").fetchone()[0])


def session_offset(connection: Any) -> int:
    """Seconds that this session's clock (the times it writes into jobs tables) is ahead
    of UTC: ``-18000`` in a session of New York in winter, ``19800`` in one of Kolkata."""
    local, utc = connection.query(f"SELECT {session_now_sql(connection)}, {utc_now_sql(connection)}").fetchone()
    # Both are read at the statement's start; zones are whole minutes.
    return round((naive_utc(local) - naive_utc(utc)).total_seconds() / 60) * 60


def naive_utc(value: datetime.datetime) -> datetime.datetime:
    """``value`` as naive UTC: a time with a zone converted, a naive one taken as UTC
    already (the records' times)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def utc_text(value: datetime.datetime | str | None, *, zone: str = "") -> str:
    """A record's time for people: ``2026-12-03 09:12:44`` (seconds), then ``zone``
    (e.g. ``" UTC"``; leave it out where a heading says so); ``-`` for none; text as it is
    (already formatted)."""
    if value is None:
        return "-"
    if not isinstance(value, datetime.datetime):
        return str(value)
    return naive_utc(value).strftime("%Y-%m-%d %H:%M:%S") + zone
