"""Reservations in DataJoint's own jobs tables (``~~<table>``).

Rows are read and written with exactly DataJoint's columns and meanings, so a
plain ``Table.populate(reserve_jobs=True)`` beside a djdask campaign sees the
same queue.  Enqueue is one set-based statement; a claim takes a batch of
pending keys in one short transaction with ``FOR UPDATE SKIP LOCKED``; the same
SQL serves PostgreSQL and MySQL/MariaDB (no ``UPDATE ... RETURNING`` and no
``LIMIT`` in an ``IN`` subquery, which MariaDB lacks).
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterable, Sequence
from typing import Any

from . import djcompat

__all__ = ["JobQueue"]

logger = logging.getLogger(__name__)


class JobQueue:
    """The jobs table of one auto-populated table, seen from a campaign.

    Parameters
    ----------
    table : datajoint.Table
        An instance of an Imported or Computed table.  Its jobs table is
        created the way DataJoint creates it when it does not exist.
    restriction : dict, optional
        ``attribute -> value`` pairs that limit which keys this queue enqueues
        and claims; attributes absent from the table's key source are ignored.
    """

    def __init__(self, table: Any, restriction: dict | None = None) -> None:
        self.table = table
        self.jobs = table.jobs  # DataJoint declares a missing jobs table on first access
        self.connection = table.connection
        self.adapter = self.connection.adapter
        self.pk: list[str] = list(self.jobs.primary_key)
        key_source = table.key_source
        names = set(key_source.heading.names)
        self.restriction = {k: v for k, v in (restriction or {}).items() if k in names}
        self.key_source = key_source & self.restriction if self.restriction else key_source
        self._user: str | None = None

    # -- helpers ---------------------------------------------------------------
    def _q(self, name: str) -> str:
        return self.adapter.quote_identifier(name)

    @property
    def _name(self) -> str:
        return self.jobs.full_table_name

    @property
    def _is_postgres(self) -> bool:
        return self.connection._config["database.backend"] == "postgresql"

    def _keys_condition(self, keys: Sequence[dict]) -> tuple[str, list]:
        cols = ", ".join(self._q(k) for k in self.pk)
        row = "(" + ", ".join(["%s"] * len(self.pk)) + ")"
        args = [key[k] for key in keys for k in self.pk]
        return f"({cols}) IN ({', '.join([row] * len(keys))})", args

    def _missing_sql(self) -> str:
        """SELECT of the keys to compute: ``(key_source & restriction) - table``."""
        missing = self.key_source.proj() - self.table.proj()
        return missing.make_sql(fields=self.pk)

    # -- queue operations --------------------------------------------------------
    def enqueue(self, priority: int | None = None) -> int:
        """Add every missing key as ``pending`` in one statement; return how many were added.

        Rows that already exist (pending, reserved, error, ignore) are left alone.
        """
        if priority is None:
            priority = self.connection._config.jobs.default_priority
        cols = ", ".join(self._q(k) for k in self.pk)
        select = f"SELECT {cols}, 'pending', %s FROM ({self._missing_sql()}) AS {self._q('_missing')}"
        target = f"{self._name} ({cols}, {self._q('status')}, {self._q('priority')})"
        if self._is_postgres:
            sql = f"INSERT INTO {target} {select} ON CONFLICT DO NOTHING"
        else:
            sql = f"INSERT IGNORE INTO {target} {select}"
        added = self.connection.query(sql, args=(int(priority),)).rowcount
        logger.info("Enqueued %d keys of %s", added, self.table.class_name)
        return added

    def claim(self, limit: int) -> list[dict]:
        """Reserve up to ``limit`` pending keys, in priority order, in one transaction."""
        if self._user is None:
            self._user = self.connection.get_user()
        q = self._q
        cols = ", ".join(q(k) for k in self.pk)
        where = f"{q('status')} = 'pending' AND {q('scheduled_time')} <= CURRENT_TIMESTAMP(3)"
        if self.restriction:
            where += f" AND ({cols}) IN ({self.key_source.proj().make_sql(fields=self.pk)})"
        select = (
            f"SELECT {cols} FROM {self._name} WHERE {where} "
            f"ORDER BY {q('priority')}, {q('scheduled_time')} LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        with self.connection.transaction:
            rows = self.connection.query(select, args=(int(limit),), as_dict=True).fetchall()
            keys = [{k: row[k] for k in self.pk} for row in rows]
            if keys:
                condition, args = self._keys_condition(keys)
                self.connection.query(
                    f"UPDATE {self._name} SET {q('status')} = 'reserved', "
                    f"{q('reserved_time')} = CURRENT_TIMESTAMP(3), {q('host')} = %s, {q('pid')} = %s, "
                    f"{q('connection_id')} = %s, {q('user')} = %s, {q('version')} = %s "
                    f"WHERE {condition}",
                    args=(
                        platform.node(),
                        os.getpid(),
                        self.connection.connection_id,
                        self._user,
                        djcompat.job_version(self.connection),
                        *args,
                    ),
                )
        return keys

    def complete(self, done: Iterable[tuple[dict, float]]) -> None:
        """Record successes: delete their rows, or mark them ``success`` when DataJoint's
        ``jobs.keep_completed`` is set."""
        done = list(done)
        if not done:
            return
        q = self._q
        if self.connection._config.jobs.keep_completed:
            for key, duration in done:
                condition, args = self._keys_condition([key])
                self.connection.query(
                    f"UPDATE {self._name} SET {q('status')} = 'success', "
                    f"{q('completed_time')} = CURRENT_TIMESTAMP(3), {q('duration')} = %s WHERE {condition}",
                    args=(duration, *args),
                )
        else:
            condition, args = self._keys_condition([key for key, _ in done])
            self.connection.query(f"DELETE FROM {self._name} WHERE {condition}", args=args)

    def error(self, key: dict, message: str, stack: str | None) -> None:
        """Record a failed key as an ``error`` row, as DataJoint's own ``populate`` does."""
        self.jobs.error(key, error_message=message, error_stack=stack)

    def release(self, keys: Sequence[dict]) -> int:
        """Put keys this connection reserved back to ``pending``; return how many."""
        if not keys:
            return 0
        q = self._q
        condition, args = self._keys_condition(keys)
        cursor = self.connection.query(
            f"UPDATE {self._name} SET {q('status')} = 'pending', {q('reserved_time')} = NULL, "
            f"{q('host')} = '', {q('pid')} = 0, {q('connection_id')} = 0, {q('user')} = '' "
            f"WHERE {q('status')} = 'reserved' AND {q('connection_id')} = %s AND {condition}",
            args=(self.connection.connection_id, *args),
        )
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        """Jobs by status: pending, reserved, success, error, ignore, total."""
        return self.jobs.progress()
