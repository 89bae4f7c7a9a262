"""Tables that DataJoint's jobs tables cannot hold, run without reservations.

A Computed table whose primary key has no attribute that comes from a foreign
key (its ``key_source`` is another table, whose key becomes a secondary
attribute, and ``make()`` invents the new key fields; DataJoint declares it
only with ``jobs.allow_new_pk_fields_in_computed_tables``) has no jobs table:
DataJoint refuses to create one ("no FK-derived primary key attributes
found"), and its own ``populate()`` runs it in direct mode.

djdask does the same.  One campaign at a time runs such a table: it holds a
database advisory lock named after the table (MySQL ``GET_LOCK``, PostgreSQL
``pg_try_advisory_lock``) for the campaign's life; a second campaign skips the
table with a warning.  The keys to make are ``(key_source & restriction) -
table``, read a batch at a time; each key is made in its own transaction
after DataJoint's "already made" check (``_populate1``, as for every table).
Failed keys have no error row to go to: they are logged, counted, and not
tried again by this campaign.  :class:`UnreservedQueue` offers the part of
:class:`~djdask.jobs.queue.JobQueue`'s interface the campaign uses.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from djdask.jobs.enqueue import among_keys
from djdask.keys import KeyCodec
from djdask.planning.inputs import gate
from djdask.planning.planner import restrict

__all__ = ["UnreservedQueue"]

logger = logging.getLogger(__name__)


class UnreservedQueue:
    """The keys of a table without a jobs table, seen from a campaign.

    Parameters
    ----------
    table : datajoint.Table
        An instance of the auto-populated table.
    restriction : dict, optional
        ``attribute -> value`` pairs; attributes its key source lacks are ignored.
    """

    reserved = False

    def __init__(self, table: Any, restriction: dict | None = None) -> None:
        self.table = table
        self.connection = table.connection
        key_source = table.key_source
        names = set(key_source.heading.names)
        self.restriction = {k: v for k, v in (restriction or {}).items() if k in names}
        self.key_source = restrict(key_source, self.restriction)
        self.pk: list[str] = list(key_source.primary_key)
        self.codec = KeyCodec(key_source.heading, self.pk)  # for the keys read with its own SQL
        self._in_flight: set[tuple] = set()
        self._failed: set[tuple] = set()
        self._empty: set[tuple] = set()  # made, committed, and still missing: make() inserts nothing
        self._holds = 0  # times this session holds the table's lock (re-entrant on both backends)
        self._refused = False
        #: Queues whose keys still to make hold this table's keys back (:mod:`djdask.planning.inputs`).
        self.blockers: list[Any] = []

    @property
    def name(self) -> str:
        return self.table.full_table_name

    def _missing(self, among: Sequence[dict] | None = None) -> Any:
        return (among_keys(self.key_source, among) - self.table).proj()

    def _tuple(self, key: dict) -> tuple:
        return tuple(key[k] for k in self.pk)

    def _ready_sql(self, select: str, among: Sequence[dict] | None = None) -> str:
        """``SELECT select`` over the missing keys (matching ``among``) whose inputs have nothing
        left to make for them."""
        q = self.connection.adapter.quote_identifier
        alias = q("_missing")
        return (
            f"SELECT {select} FROM ({self._missing(among).make_sql()}) AS {alias} "
            f"WHERE {gate(alias, self.pk, self.blockers, q)}"
        )

    def _count_ready(self, among: Sequence[dict] | None = None) -> int:
        """How many missing keys (matching ``among``) are ready to make."""
        if not self.blockers:
            return len(self._missing(among))
        return int(self.connection.query(self._ready_sql("COUNT(*)", among)).fetchone()[0])

    def _missing_keys(self, limit: int) -> list[dict]:
        """Up to ``limit`` missing keys in key order (only ready ones, for a table with inputs
        beyond its foreign keys), as DataJoint's fetch gives them."""
        if not self.blockers:
            return self._missing().keys(order_by=self.pk, limit=limit)
        q = self.connection.adapter.quote_identifier
        cols = ", ".join(q(k) for k in self.pk)
        rows = self.connection.query(f"{self._ready_sql(cols)} ORDER BY {cols} LIMIT {int(limit)}").fetchall()
        return [self.codec.decode(row) for row in rows]

    # -- the lock ------------------------------------------------------------------
    def _lock_name(self) -> str:
        return "djdask:" + hashlib.sha1(self.name.encode()).hexdigest()[:40]

    def _lock_number(self) -> int:
        return int.from_bytes(hashlib.sha1(self._lock_name().encode()).digest()[:8], "big", signed=True)

    def lock(self) -> bool:
        """Hold the table's advisory lock for this campaign; False when another campaign holds it.

        Asked again before every claim: a connection that DataJoint re-opened has lost the
        lock, and another campaign may have taken it since; then this one stops making the
        table's keys (the "already made" check keeps a key from being made twice meanwhile).
        """
        if self._refused:
            return False
        if self.connection.adapter.backend == "postgresql":
            sql, arg = "SELECT pg_try_advisory_lock(%s)", self._lock_number()
        else:
            sql, arg = "SELECT GET_LOCK(%s, 0)", self._lock_name()
        if self.connection.query(sql, args=(arg,)).fetchone()[0]:
            self._holds += 1
            return True
        self._refused = True
        logger.warning(
            "%s runs without a jobs table and another campaign is running it now (it holds the table's "
            "lock%s): this campaign leaves it alone.",
            self.table.class_name,
            "; this campaign's connection was re-opened and lost it" if self._holds else "",
        )
        return False

    def unlock(self) -> None:
        """Release every hold of the lock (a lock of a session that ended is gone already)."""
        if self.connection.adapter.backend == "postgresql":
            sql, arg = "SELECT pg_advisory_unlock(%s)", self._lock_number()
        else:
            sql, arg = "SELECT RELEASE_LOCK(%s)", self._lock_name()
        try:
            for _ in range(self._holds):
                self.connection.query(sql, args=(arg,))
        except Exception as err:  # the lock ends with the session anyway
            logger.debug("Could not release the lock of %s: %s", self.name, err)
        self._holds = 0

    # -- the interface the campaign uses ---------------------------------------------
    def enqueue(
        self, priority: int | None = None, *, among: Sequence[dict] | None = None, tidy_first: bool = True
    ) -> int:
        """Nothing is enqueued; with ``among``, how many of those keys are now missing."""
        if not among or not self.lock():
            return 0
        return self._count_ready(among)

    def claim(self, limit: int, *, max_priority: int | None = None) -> list[dict]:
        """Up to ``limit`` missing keys that are not in flight and have not failed."""
        if not self.lock():
            return []
        skip = len(self._in_flight) + len(self._failed) + len(self._empty)
        keys = []
        for key in self._missing_keys(limit + skip):
            key = {k: key[k] for k in self.pk}
            t = self._tuple(key)
            if t in self._in_flight or t in self._failed or t in self._empty:
                continue
            keys.append(key)
            self._in_flight.add(t)
            if len(keys) == limit:
                break
        return keys

    def complete(self, done: Iterable[tuple[dict, float]]) -> None:
        keys = [key for key, _ in done]
        for key in keys:
            self._in_flight.discard(self._tuple(key))
        if keys:  # a make() that inserted nothing leaves its key missing: made once per campaign
            self._empty |= {self._tuple(k) for k in self._missing(keys).keys()}

    def fail(self, errors: Sequence[tuple[dict, str, str | None]]) -> None:
        for key, _message, _stack in errors:
            t = self._tuple(key)
            self._in_flight.discard(t)
            self._failed.add(t)

    def release(self, keys: Sequence[dict]) -> int:
        for key in keys:
            self._in_flight.discard(self._tuple(key))
        return len(keys)

    def counts(self) -> dict[str, int]:
        """``pending``: missing keys this campaign may still make."""
        if not self.lock():
            return {"pending": 0, "reserved": 0, "success": 0, "error": 0, "ignore": 0, "total": 0}
        missing = self._count_ready()
        pending = max(0, missing - len(self._in_flight) - len(self._failed) - len(self._empty))
        return {
            "pending": pending,
            "reserved": len(self._in_flight),
            "success": 0,
            "error": len(self._failed),
            "ignore": 0,
            "total": missing,
        }
