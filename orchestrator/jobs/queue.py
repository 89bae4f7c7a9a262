"""Reservations in DataJoint's own jobs tables (``~~<table>``).

Rows are read and written with exactly DataJoint's columns and meanings, so a
plain ``Table.populate(reserve_jobs=True)`` beside a djdask campaign sees the
same queue and every key is computed once.

- Enqueue: the missing keys, ``(key_source & restriction) - table``, in one
  ``INSERT ... SELECT`` that leaves existing rows (reserved, error, ignore)
  alone.
- Claim: up to N pending keys in one short transaction, ``SELECT ... FOR UPDATE
  SKIP LOCKED`` in priority order, then one ``UPDATE`` stamping the owner.  The
  same SQL serves PostgreSQL and MySQL/MariaDB (MariaDB has no ``UPDATE ...
  RETURNING`` and no ``LIMIT`` inside ``IN``).
- Complete, fail, release: batched, one statement or one transaction per batch.

A campaign owns its reservations by ``(host, pid)``; ``connection_id`` names
the session that must be alive for them to count as live (see
:mod:`djdask.jobs.leases`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from djdask import djcompat
from djdask.errors import JobsTableError
from djdask.jobs import enqueue
from djdask.jobs.conflicts import retry_on_conflict
from djdask.keys import KeyCodec, sql_value
from djdask.planning.inputs import gate
from djdask.planning.planner import restrict

__all__ = [
    "ERROR_MESSAGE_LENGTH",
    "JOBS_COLUMNS",
    "JobQueue",
    "Owner",
    "declared_jobs",
    "is_permission_error",
    "keys_condition",
]

logger = logging.getLogger(__name__)

#: The columns of a DataJoint 2.x jobs table besides the key.
JOBS_COLUMNS = (
    "status",
    "priority",
    "created_time",
    "scheduled_time",
    "reserved_time",
    "completed_time",
    "duration",
    "error_message",
    "error_stack",
    "user",
    "host",
    "pid",
    "connection_id",
    "version",
)

ERROR_MESSAGE_LENGTH = 2047  # DataJoint's varchar(2047)


@dataclass(frozen=True)
class Owner:
    """Who holds a reservation: the campaign process, and how DataJoint stamps it."""

    host: str
    pid: int
    user: str
    version: str

    @classmethod
    def of(cls, connection: Any) -> Owner:
        # DataJoint's version column is varchar(64); its job metadata truncates the same way.
        return cls(platform.node(), os.getpid(), connection.get_user(), djcompat.current_job_version(connection)[:64])


def keys_condition(
    quote: Callable[[str], str], pk: Sequence[str], keys: Sequence[Sequence[Any] | dict], *, backend: str
) -> tuple[str, list]:
    """SQL matching exactly ``keys`` (dicts or value tuples in ``pk`` order), with its arguments;
    values as DataJoint's fetch gives them or as stored (:func:`djdask.keys.sql_value`)."""
    rows = [[key[k] for k in pk] if isinstance(key, dict) else list(key) for key in keys]
    if len(pk) == 1:
        return f"{quote(pk[0])} IN ({', '.join(['%s'] * len(rows))})", [sql_value(row[0], backend) for row in rows]
    one = "(" + " AND ".join(f"{quote(k)} = %s" for k in pk) + ")"
    return "(" + " OR ".join([one] * len(rows)) + ")", [sql_value(v, backend) for row in rows for v in row]


def declared_jobs(table: Any, *, attempts: int = 5) -> Any:
    """``table.jobs``, created by DataJoint if missing, safe against concurrent creation.

    DataJoint declares a jobs table in several statements (on PostgreSQL a
    type, the table, its index); two processes that declare it at the same
    time can fail with "already exists".  Then the other process's declaration
    is what counts: wait for it and use the table.
    """
    try:
        return table.jobs
    except Exception as err:
        if is_permission_error(err):
            raise JobsTableError(_create_denied(table, err)) from None
        if "already exists" not in str(err):
            raise
        logger.debug("Jobs table of %s declared concurrently: %s", table.class_name, err)
    # DataJoint cached the Job object before its declaration failed.
    jobs = table.jobs
    for attempt in range(attempts):
        if jobs.is_declared:
            return jobs
        time.sleep(0.2 * (attempt + 1))
    raise JobsTableError(
        f"The jobs table of {table.class_name} was being created by another process and did not "
        "appear. Retry; if it persists, create it with DataJoint: "
        f"`{table.class_name}.jobs` in Python."
    )


def is_permission_error(err: BaseException) -> bool:
    """Whether the database refused a statement for want of a privilege."""
    text = f"{type(err).__name__}: {err}"
    return bool(
        re.search(
            r"AccessError|command denied|permission denied|InsufficientPrivilege|must be owner|Access denied for", text
        )
    )


def _create_denied(table: Any, err: BaseException) -> str:
    user = table.connection.conn_info.get("user")
    schema = table.database
    postgres = table.connection.adapter.backend == "postgresql"
    grant = (
        f'GRANT CREATE ON SCHEMA "{schema}" TO "{user}";'
        if postgres
        else f"GRANT CREATE ON `{schema}`.* TO '{user}'@'%';"
    )
    module = type(table).__module__.split(".")[0] if type(table).__module__ else "MODULE"
    return (
        f"User {user!r} may not create tables in schema {schema!r} (it lacks the CREATE privilege: "
        f"{str(err).strip().splitlines()[0][:200]}), so djdask cannot create the jobs table of {table.class_name}. "
        f"Either a privileged user runs once `djdask jobs init {module}` (it creates the jobs tables of every "
        "auto-populated table; campaigns then need only SELECT, INSERT, UPDATE and DELETE), or grant the privilege: "
        f"{grant} Nothing was written."
    )


#: The key columns of each jobs table a JobQueue of this process opened, by full name:
#: orphan recovery and lease renewal read them here instead of loading each table's
#: heading again (200 tables: 1.4 s at each campaign start and each orphan check).
KEY_COLUMNS: dict[str, list[str]] = {}


class JobQueue:
    """The jobs table of one auto-populated table, seen from a campaign.

    Parameters
    ----------
    table : datajoint.Table
        An instance of an Imported or Computed table.  A missing jobs table is
        created by DataJoint itself, on first access to ``table.jobs``.
    restriction : dict, optional
        ``attribute -> value`` pairs that limit which keys this queue enqueues
        and claims; attributes absent from the table's key source are ignored.
    owner : Owner, optional
        The reservation stamp; default this process on ``table``'s connection.

    Raises
    ------
    JobsTableError
        When the jobs table lacks columns of DataJoint 2.x's layout.
    """

    reserved = True  # keys are reserved in a jobs table (see djdask.jobs.unreserved for tables without)

    def __init__(self, table: Any, restriction: dict | None = None, owner: Owner | None = None) -> None:
        self.table = table
        self.jobs = declared_jobs(table)
        self.connection = table.connection
        self.adapter = self.connection.adapter
        self.check_layout()
        self.pk: list[str] = list(self.jobs.primary_key)
        # Keys leave this queue as DataJoint's fetch gives them (a uuid as uuid.UUID), whatever
        # the driver returned; they come back in that form and are sent as stored.
        self.codec = KeyCodec(self.jobs.heading, self.pk)
        KEY_COLUMNS[self.name] = self.pk
        key_source = table.key_source
        names = set(key_source.heading.names)
        self.restriction = {k: v for k, v in (restriction or {}).items() if k in names}
        self.full_key_source = key_source
        self.key_source = restrict(key_source, self.restriction)
        self.owner = owner or Owner.of(self.connection)
        #: Queues of the tables whose keys still to make hold this table's keys back (its
        #: inputs beyond foreign keys, :mod:`djdask.planning.inputs`); set by the campaign.
        self.blockers: list[JobQueue | Any] = []

    # -- helpers ---------------------------------------------------------------
    def quote(self, name: str) -> str:
        """``name`` quoted as an identifier for this backend."""
        return self.adapter.quote_identifier(name)

    @property
    def name(self) -> str:
        """The jobs table's full name, quoted for this backend."""
        return self.jobs.full_table_name

    @property
    def is_postgres(self) -> bool:
        """Whether the jobs table is on PostgreSQL (else MySQL or MariaDB)."""
        return self.adapter.backend == "postgresql"

    def _keys_condition(self, keys: Sequence[dict]) -> tuple[str, list]:
        """A WHERE condition matching exactly ``keys``, written so that the primary key
        index serves it on every backend: a plain ``IN`` for one column, an ``OR`` of
        equalities for several (MariaDB scans the table, and waits on every locked row,
        for a row-constructor ``IN``)."""
        return keys_condition(self.quote, self.pk, keys, backend=self.adapter.backend)

    def check_layout(self) -> None:
        """Refuse a jobs table that is not in DataJoint 2.x's layout, before touching it."""
        present = set(self.jobs.heading.names)
        missing = [c for c in JOBS_COLUMNS if c not in present]
        if missing:
            raise JobsTableError(
                f"The jobs table {self.name} lacks the columns {', '.join(missing)} of DataJoint 2.x's "
                "layout; djdask leaves it untouched. It was made by another DataJoint version: drop it "
                f"(`{self.table.class_name}.jobs.drop()`) once no worker uses it, and DataJoint recreates it."
            )

    # -- queue operations --------------------------------------------------------
    def enqueue(
        self, priority: int | None = None, *, among: Sequence[dict] | None = None, tidy_first: bool = True
    ) -> int:
        """Add missing keys as ``pending``; return how many (see :func:`djdask.jobs.enqueue.enqueue`)."""
        return enqueue.enqueue(self, priority, among=among, tidy_first=tidy_first)

    def tidy(self) -> dict[str, int]:
        """Re-pend completed keys to make again, remove vanished ones (:func:`djdask.jobs.enqueue.tidy`)."""
        return enqueue.tidy(self)

    def ignore(self) -> dict[str, int]:
        """Mark this queue's missing keys ``ignore`` (:func:`djdask.jobs.enqueue.ignore`)."""
        return enqueue.ignore(self)

    def claim(self, limit: int, *, max_priority: int | None = None) -> list[dict]:
        """Reserve up to ``limit`` pending keys, lowest priority value first, in one transaction.

        Concurrent claimers get disjoint batches without waiting for each
        other: locked rows are skipped, and the ``(status, priority,
        scheduled_time)`` index keeps the scan to pending rows.
        """
        q = self.quote
        cols = ", ".join(q(k) for k in self.pk)
        where = f"{q('status')} = 'pending' AND {q('scheduled_time')} <= CURRENT_TIMESTAMP(3)"
        args: list[Any] = []
        if max_priority is not None:
            where += f" AND {q('priority')} <= %s"
            args.append(int(max_priority))
        if self.restriction:
            where += f" AND ({cols}) IN ({self.key_source.proj().make_sql(fields=self.pk)})"
        select = (
            f"SELECT {cols} FROM {self.name} WHERE {where} "
            f"ORDER BY {q('priority')}, {q('scheduled_time')} LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        args.append(int(limit))

        def claim_once() -> list[dict]:
            if not self.is_postgres:
                # Under InnoDB's default REPEATABLE READ the claim's UPDATE, which
                # moves rows within the status index, waits on the gap locks of a
                # concurrent claimer; READ COMMITTED takes none (measured on
                # MariaDB 10.11: a lock-wait timeout, then none).
                self.connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            with self.connection.transaction:
                rows = self.connection.query(select, args=tuple(args), as_dict=True).fetchall()
                keys = [self.codec.decode(row) for row in rows]
                if keys:
                    condition, key_args = self._keys_condition(keys)
                    self.connection.query(
                        f"UPDATE {self.name} SET {q('status')} = 'reserved', "
                        f"{q('reserved_time')} = CURRENT_TIMESTAMP(3), {q('host')} = %s, {q('pid')} = %s, "
                        f"{q('connection_id')} = %s, {q('user')} = %s, {q('version')} = %s "
                        f"WHERE {condition}",
                        args=(
                            self.owner.host,
                            self.owner.pid,
                            djcompat.live_connection_id(self.connection),
                            self.owner.user,
                            self.owner.version,
                            *key_args,
                        ),
                    )
            return keys

        while True:
            keys = retry_on_conflict(claim_once)
            # The reservations are committed: whatever goes wrong from here, give them back.
            try:
                present = self._present(keys)
                if len(present) == len(keys):
                    return keys
                self._drop_vanished([k for k in keys if self._tuple(k) not in present])
            except BaseException:
                with contextlib.suppress(Exception):  # the error that stopped us is the one to see
                    self.release(keys)
                raise
            keys = [k for k in keys if self._tuple(k) in present]
            if keys:
                return keys

    def _tuple(self, key: dict) -> tuple:
        return tuple(key[k] for k in self.pk)

    def _present(self, keys: Sequence[dict]) -> set[tuple]:
        """Which of ``keys`` are in the key source now (a key claimed may have vanished
        since it was enqueued: its upstream row was deleted) and ready (its inputs beyond
        foreign keys have nothing left to make for it: a row that ``refresh()`` or another
        campaign enqueued may be early)."""
        if not keys:
            return set()
        # Plain SQL, read back through the same codec as the claim's keys.
        condition, args = self._keys_condition(keys)
        cols = ", ".join(self.quote(k) for k in self.pk)
        if self.blockers:
            condition += f" AND {gate(self.quote('_source'), self.pk, self.blockers, self.quote)}"
        rows = self.connection.query(
            f"SELECT {cols} FROM ({self.full_key_source.proj().make_sql(fields=self.pk)}) AS {self.quote('_source')} "
            f"WHERE {condition}",
            args=args,
        ).fetchall()
        return {self._tuple(self.codec.decode(row)) for row in rows}

    def _drop_vanished(self, keys: Sequence[dict]) -> None:
        """Remove the rows of claimed keys that have left the key source, as ``refresh()``
        removes vanished keys: there is nothing to make for them (or not yet: a key whose
        inputs still have keys to make is enqueued again once they are made)."""
        q = self.quote
        condition, args = self._keys_condition(keys)
        self.connection.query(
            f"DELETE FROM {self.name} WHERE {q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s "
            f"AND {condition}",
            args=(self.owner.host, self.owner.pid, *args),
        )
        logger.info(
            "%s: %d claimed key(s) have left the key source%s; their rows were removed",
            self.table.class_name,
            len(keys),
            " or wait for their inputs" if self.blockers else "",
        )

    def complete(self, done: Iterable[tuple[dict, float]]) -> None:
        """Record successes in one statement: delete their rows, or mark them ``success``
        with completion time and duration when DataJoint's ``jobs.keep_completed`` is set."""
        done = list(done)
        if not done:
            return
        q = self.quote
        condition, args = self._keys_condition([key for key, _ in done])
        if djcompat.jobs_settings(self.connection).keep_completed:
            cases = " ".join("WHEN " + " AND ".join(f"{q(k)} = %s" for k in self.pk) + " THEN %s" for _ in done)
            backend = self.adapter.backend
            case_args = [
                v for key, duration in done for v in (*(sql_value(key[k], backend) for k in self.pk), float(duration))
            ]
            sql = (
                f"UPDATE {self.name} SET {q('status')} = 'success', "
                f"{q('completed_time')} = CURRENT_TIMESTAMP(3), {q('duration')} = CASE {cases} END "
                f"WHERE {condition}"
            )
            retry_on_conflict(lambda: self.connection.query(sql, args=(*case_args, *args)))
        else:
            retry_on_conflict(lambda: self.connection.query(f"DELETE FROM {self.name} WHERE {condition}", args=args))

    def fail(self, errors: Sequence[tuple[dict, str, str | None]]) -> None:
        """Record failed keys as ``error`` rows with message and stack, in DataJoint's format
        (``Table.jobs.errors`` shows them), in one transaction."""
        if not errors:
            return
        q = self.quote

        def attempt() -> None:
            with self.connection.transaction:
                for key, message, stack in errors:
                    if len(message) > ERROR_MESSAGE_LENGTH:
                        message = message[: ERROR_MESSAGE_LENGTH - 12] + "...truncated"
                    condition, args = self._keys_condition([key])
                    self.connection.query(
                        f"UPDATE {self.name} SET {q('status')} = 'error', "
                        f"{q('completed_time')} = CURRENT_TIMESTAMP(3), {q('error_message')} = %s, "
                        f"{q('error_stack')} = %s WHERE {condition}",
                        args=(message, None if stack is None else djcompat.encode_error_stack(self.jobs, stack), *args),
                    )

        retry_on_conflict(attempt)

    def release(self, keys: Sequence[dict]) -> int:
        """Put keys this campaign holds back to ``pending``; return how many."""
        if not keys:
            return 0
        q = self.quote
        condition, args = self._keys_condition(keys)
        sql = (
            f"UPDATE {self.name} SET {q('status')} = 'pending', {q('reserved_time')} = NULL, "
            f"{q('host')} = '', {q('pid')} = 0, {q('connection_id')} = 0, {q('user')} = '' "
            f"WHERE {q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s AND {condition}"
        )
        cursor = retry_on_conflict(lambda: self.connection.query(sql, args=(self.owner.host, self.owner.pid, *args)))
        return cursor.rowcount

    def release_all_but(self, keep: Sequence[dict]) -> int:
        """Put every key this campaign holds back to ``pending`` except ``keep`` (those in
        flight); return how many.  After an outage: a claim whose commit went through with
        its answer lost reserved keys that no batch carries."""
        q = self.quote
        cols = ", ".join(q(k) for k in self.pk)
        rows = self.connection.query(
            f"SELECT {cols} FROM {self.name} WHERE {q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s",
            args=(self.owner.host, self.owner.pid),
        ).fetchall()
        kept = {self._tuple(k) for k in keep}
        stray = [key for key in map(self.codec.decode, rows) if self._tuple(key) not in kept]
        return sum(self.release(stray[i : i + 500]) for i in range(0, len(stray), 500))

    def retry_errors(self, older_than: float | None = None) -> int:
        """Put every ``error`` row back to ``pending`` (``djdask retry``), or only those
        recorded more than ``older_than`` seconds ago by the server's clock (a following
        campaign's ``djdask.campaign.retry-errors-after``); return how many."""
        q = self.quote
        where, args = f"{q('status')} = 'error'", ()
        if older_than is not None:
            # completed_time was stamped by the server (CURRENT_TIMESTAMP(3) in fail(), or
            # DataJoint's own error()): compared with the server's clock, never this host's.
            if self.is_postgres:
                where += f" AND {q('completed_time')} < CURRENT_TIMESTAMP(3) - make_interval(secs => %s)"
                args = (float(older_than),)
            else:
                where += f" AND {q('completed_time')} < CURRENT_TIMESTAMP(3) - INTERVAL %s MICROSECOND"
                args = (int(older_than * 1e6),)
        cursor = self.connection.query(
            f"UPDATE {self.name} SET {q('status')} = 'pending', {q('error_message')} = '', "
            f"{q('error_stack')} = NULL, {q('completed_time')} = NULL, {q('reserved_time')} = NULL, "
            f"{q('scheduled_time')} = CURRENT_TIMESTAMP(3) WHERE {where}",
            args=args,
        )
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        """Jobs by status: pending, reserved, success, error, ignore, total."""
        return self.jobs.progress()
