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
:mod:`djdask.leases`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import djcompat
from .errors import InvalidInputError, JobsTableError

__all__ = [
    "JOBS_COLUMNS",
    "JobQueue",
    "Owner",
    "PRIORITY_RANGE",
    "check_legacy_jobs",
    "check_make_kwargs",
    "check_priority",
    "keys_condition",
    "legacy_jobs_tables",
    "retry_on_conflict",
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

T = TypeVar("T")

#: Priorities both backends store alike: DataJoint's ``int8`` is MySQL's signed
#: ``tinyint`` (-128..127) and PostgreSQL's ``smallint``; DataJoint's own setting
#: (``jobs.default_priority``) starts at 0.
PRIORITY_RANGE = (0, 127)


def check_priority(priority: Any, what: str = "--priority") -> int | None:
    """``priority`` as an int in :data:`PRIORITY_RANGE` (None stays None), else a clear error."""
    if priority is None:
        return None
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidInputError(
            f"{what} {priority!r} is outside {low}..{high}, the priorities DataJoint's jobs tables hold alike on "
            f"MySQL and PostgreSQL (lower runs first; DataJoint's default is 5). Give a whole number from {low} "
            f"to {high}, e.g. {what} 3."
        )
    return priority


def check_make_kwargs(make_kwargs: Any, what: str = "make_kwargs") -> dict | None:
    """``make_kwargs`` as a dict of keyword arguments for ``make()`` (None stays None), else a clear error."""
    if make_kwargs is None:
        return None
    if not isinstance(make_kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in make_kwargs):
        raise InvalidInputError(
            f"{what} must map argument names to values, like populate(make_kwargs={{'scale': 3}}); got "
            f"{make_kwargs!r}. On the command line: --make-kwargs '{{\"scale\": 3}}'."
        )
    try:
        import cloudpickle

        cloudpickle.dumps(make_kwargs)
    except Exception as err:
        raise InvalidInputError(
            f"{what} must be picklable to reach the workers: {type(err).__name__}: {err}. Pass plain values "
            "(numbers, strings, lists, dicts, numpy arrays)."
        ) from None
    return dict(make_kwargs)


def _is_conflict(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return "deadlock" in text or "could not serialize" in text or "lock wait timeout" in text


def retry_on_conflict(fn: Callable[[], T], *, attempts: int = 5) -> T:
    """Run ``fn``; when the database reports a deadlock or serialization failure, retry.

    The statements djdask runs on jobs tables are short and idempotent, and
    the heartbeat's renewals can meet a batch completion on the same rows.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:
            if attempt + 1 == attempts or not _is_conflict(err):
                raise
            logger.debug("Retrying after a lock conflict: %s", err)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


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
    quote: Callable[[str], str], pk: Sequence[str], keys: Sequence[Sequence[Any] | dict]
) -> tuple[str, list]:
    """SQL matching exactly ``keys`` (dicts or value tuples in ``pk`` order), with its arguments."""
    rows = [[key[k] for k in pk] if isinstance(key, dict) else list(key) for key in keys]
    if len(pk) == 1:
        return f"{quote(pk[0])} IN ({', '.join(['%s'] * len(rows))})", [row[0] for row in rows]
    one = "(" + " AND ".join(f"{quote(k)} = %s" for k in pk) + ")"
    return "(" + " OR ".join([one] * len(rows)) + ")", [v for row in rows for v in row]


def _declared_jobs(table: Any, *, attempts: int = 5) -> Any:
    """``table.jobs``, created by DataJoint if missing, safe against concurrent creation.

    DataJoint declares a jobs table in several statements (on PostgreSQL a
    type, the table, its index); two processes that declare it at the same
    time can fail with "already exists".  Then the other process's declaration
    is what counts: wait for it and use the table.
    """
    try:
        return table.jobs
    except Exception as err:
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

    reserved = True  # keys are reserved in a jobs table (see djdask.unreserved for tables without)

    def __init__(self, table: Any, restriction: dict | None = None, owner: Owner | None = None) -> None:
        self.table = table
        self.jobs = _declared_jobs(table)
        self.connection = table.connection
        self.adapter = self.connection.adapter
        self.check_layout()
        self.pk: list[str] = list(self.jobs.primary_key)
        key_source = table.key_source
        names = set(key_source.heading.names)
        self.restriction = {k: v for k, v in (restriction or {}).items() if k in names}
        self.full_key_source = key_source
        self.key_source = key_source & self.restriction if self.restriction else key_source
        self.owner = owner or Owner.of(self.connection)

    # -- helpers ---------------------------------------------------------------
    def _q(self, name: str) -> str:
        return self.adapter.quote_identifier(name)

    @property
    def name(self) -> str:
        """The jobs table's full name, quoted for this backend."""
        return self.jobs.full_table_name

    @property
    def _is_postgres(self) -> bool:
        return self.adapter.backend == "postgresql"

    def _keys_condition(self, keys: Sequence[dict]) -> tuple[str, list]:
        """A WHERE condition matching exactly ``keys``, written so that the primary key
        index serves it on every backend: a plain ``IN`` for one column, an ``OR`` of
        equalities for several (MariaDB scans the table, and waits on every locked row,
        for a row-constructor ``IN``)."""
        return keys_condition(self._q, self.pk, keys)

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
    def enqueue(self, priority: int | None = None, *, among: Sequence[dict] | None = None) -> int:
        """Add missing keys as ``pending`` in one statement; return how many were added.

        Parameters
        ----------
        priority : int, optional
            Priority of the new rows; default DataJoint's ``jobs.default_priority``.
        among : sequence of dict, optional
            Only keys matching one of these (for example the keys a parent
            table just finished: the streaming campaign enqueues what they made
            ready).  Attributes the key source lacks are ignored; when none
            remain, every missing key is enqueued.

        Rows that already exist (pending, reserved, error, ignore) are left alone.
        A full sweep first tidies the table as DataJoint's ``refresh()`` does:
        with ``jobs.keep_completed``, a ``success`` row whose key is missing from
        the table again (its rows were deleted to have them remade) becomes
        pending; pending rows whose key has left the key source are removed, and
        so are success and error rows whose key is in neither the key source nor
        the table.  ``ignore`` and ``reserved`` rows are kept.
        """
        if priority is None:
            priority = djcompat.jobs_settings(self.connection).default_priority
        cols = ", ".join(self._q(k) for k in self.pk)
        empty = False
        if not among:
            empty = self._is_empty()
            if not empty:  # a table that was empty has nothing to tidy
                self.tidy()
        source = self.key_source
        if among:
            names = [n for n in source.heading.names if n in among[0]]
            if names:
                unique = {tuple(key[n] for n in names) for key in among}
                source = source & [dict(zip(names, values)) for values in unique]
        missing = (source.proj() - self.table.proj()).make_sql(fields=self.pk)
        select = f"SELECT {cols}, 'pending', %s FROM ({missing}) AS {self._q('_missing')}"
        target = f"{self.name} ({cols}, {self._q('status')}, {self._q('priority')})"
        args = (int(priority),)
        added = None
        # A full sweep into an empty jobs table (a campaign's first) is a bulk load.
        if not among and not self.connection.in_transaction and empty:
            added = self._insert_into_empty(f"INSERT INTO {target} {select}", args)
        if added is None:
            if self._is_postgres:
                added = self.connection.query(
                    f"INSERT INTO {target} {select} ON CONFLICT DO NOTHING", args=args
                ).rowcount
            else:
                added = self.connection.query(f"INSERT IGNORE INTO {target} {select}", args=args).rowcount
        logger.debug("Enqueued %d keys of %s", added, self.table.class_name)
        return added

    def _keys_in(self, expression: Any) -> str:
        """``(pk) IN (SELECT pk FROM expression)``, for a WHERE clause over the jobs table."""
        cols = ", ".join(self._q(k) for k in self.pk)
        inner = f"SELECT {cols} FROM ({expression.proj().make_sql(fields=self.pk)}) AS {self._q('_keys')}"
        return f"({cols}) IN ({inner})"

    def tidy(self) -> dict[str, int]:
        """What ``refresh()`` does besides adding keys: re-pend ``success`` rows whose key is
        missing again (``jobs.keep_completed``), remove rows whose key has vanished from the
        key source.  Returns the counts: ``re_pended``, ``removed``."""
        q = self._q
        counts = {"re_pended": 0, "removed": 0}
        if djcompat.jobs_settings(self.connection).keep_completed:
            # Deleted here and enqueued again as pending right after, as refresh() does.
            counts["re_pended"] = self.connection.query(
                f"DELETE FROM {self.name} WHERE {q('status')} = 'success' AND "
                f"{self._keys_in(self.key_source.proj() - self.table.proj())}"
            ).rowcount
        # Judged against the unrestricted key source: rows outside a restriction are not vanished.
        counts["removed"] += self.connection.query(
            f"DELETE FROM {self.name} WHERE {q('status')} = 'pending' AND NOT {self._keys_in(self.full_key_source)}"
        ).rowcount
        counts["removed"] += self.connection.query(
            f"DELETE FROM {self.name} WHERE {q('status')} IN ('success', 'error') "
            f"AND NOT {self._keys_in(self.full_key_source)} AND NOT {self._keys_in(self.table)}"
        ).rowcount
        if counts["re_pended"] or counts["removed"]:
            logger.info(
                "%s: %d completed key(s) to make again, %d row(s) of vanished keys removed",
                self.table.class_name,
                counts["re_pended"],
                counts["removed"],
            )
        return counts

    def _is_empty(self) -> bool:
        return not self.connection.query(f"SELECT 1 FROM {self.name} LIMIT 1").fetchall()

    def _insert_into_empty(self, sql: str, args: tuple) -> int | None:
        """A plain ``INSERT`` into a jobs table that was empty a moment ago; None when a row
        that another process enqueued meanwhile conflicts (nothing is inserted then).

        No row can conflict with an empty table.  PostgreSQL's ``ON CONFLICT`` costs a
        speculative insertion per row: a million keys took 5.0-5.3 s this way and 7.7-8.9 s
        with ``ON CONFLICT DO NOTHING`` (PostgreSQL 18, two cores).  InnoDB (MariaDB
        10.6+) bulk-loads an empty table when the session turns off ``unique_checks`` and
        ``foreign_key_checks``: it sorts the rows into each index and logs one undo record
        instead of one per row (a million keys: 1.8 s instead of 2.4 s with ``INSERT
        IGNORE``, MariaDB 10.11, two cores).  The primary key is still checked, so a key
        that another process enqueued in between is a duplicate error, not a second row;
        jobs tables have no foreign keys.
        """
        from datajoint.errors import DuplicateError

        try:
            with self._bulk_load():
                return self.connection.query(sql, args=args).rowcount
        except DuplicateError as err:
            logger.debug(
                "Keys of %s enqueued concurrently (%s); enqueueing them one by one", self.table.class_name, err
            )
            return None

    @contextlib.contextmanager
    def _bulk_load(self) -> Iterator[None]:
        """On MySQL/MariaDB, the session settings under which InnoDB bulk-loads an empty table."""
        if self._is_postgres:
            yield
            return
        query = self.connection.query
        query(
            "SET @djdask_unique_checks = @@SESSION.unique_checks, @djdask_fk_checks = @@SESSION.foreign_key_checks, "
            "SESSION unique_checks = 0, SESSION foreign_key_checks = 0"
        )
        try:
            yield
        finally:
            # IFNULL: a session DataJoint opened anew (a reconnect) lacks the saved values.
            query(
                "SET SESSION unique_checks = IFNULL(@djdask_unique_checks, 1), "
                "SESSION foreign_key_checks = IFNULL(@djdask_fk_checks, 1)"
            )

    def claim(self, limit: int, *, max_priority: int | None = None) -> list[dict]:
        """Reserve up to ``limit`` pending keys, lowest priority value first, in one transaction.

        Concurrent claimers get disjoint batches without waiting for each
        other: locked rows are skipped, and the ``(status, priority,
        scheduled_time)`` index keeps the scan to pending rows.
        """
        q = self._q
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

        def attempt() -> list[dict]:
            while True:
                keys = claim_once()
                present = self._present(keys)
                if len(present) == len(keys):
                    return keys
                self._drop_vanished([k for k in keys if self._tuple(k) not in present])
                keys = [k for k in keys if self._tuple(k) in present]
                if keys:
                    return keys

        def claim_once() -> list[dict]:
            if not self._is_postgres:
                # Under InnoDB's default REPEATABLE READ the claim's UPDATE, which
                # moves rows within the status index, waits on the gap locks of a
                # concurrent claimer; READ COMMITTED takes none (measured on
                # MariaDB 10.11: a lock-wait timeout, then none).
                self.connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            with self.connection.transaction:
                rows = self.connection.query(select, args=tuple(args), as_dict=True).fetchall()
                keys = [{k: row[k] for k in self.pk} for row in rows]
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

        return retry_on_conflict(attempt)

    def _tuple(self, key: dict) -> tuple:
        return tuple(key[k] for k in self.pk)

    def _present(self, keys: Sequence[dict]) -> set[tuple]:
        """Which of ``keys`` are in the key source now (a key claimed may have vanished
        since it was enqueued: its upstream row was deleted)."""
        if not keys:
            return set()
        # Plain SQL on both sides, so that the values compare as the driver returns them.
        condition, args = self._keys_condition(keys)
        cols = ", ".join(self._q(k) for k in self.pk)
        rows = self.connection.query(
            f"SELECT {cols} FROM ({self.full_key_source.proj().make_sql(fields=self.pk)}) AS {self._q('_source')} "
            f"WHERE {condition}",
            args=args,
        ).fetchall()
        return {tuple(row) for row in rows}

    def _drop_vanished(self, keys: Sequence[dict]) -> None:
        """Remove the rows of claimed keys that have left the key source, as ``refresh()``
        removes vanished keys: there is nothing to make for them."""
        q = self._q
        condition, args = self._keys_condition(keys)
        self.connection.query(
            f"DELETE FROM {self.name} WHERE {q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s "
            f"AND {condition}",
            args=(self.owner.host, self.owner.pid, *args),
        )
        logger.info(
            "%s: %d claimed key(s) have left the key source; their rows were removed", self.table.class_name, len(keys)
        )

    def ignore(self) -> dict[str, int]:
        """Mark the missing keys of this queue's key source ``ignore``, as DataJoint's
        ``jobs.ignore(key)`` does: no campaign or ``populate(reserve_jobs=True)`` claims
        them.  Keys reserved right now are left to their worker.  Returns ``ignored`` and
        ``reserved`` (left alone)."""
        q = self._q
        cols = ", ".join(q(k) for k in self.pk)
        missing = self.key_source.proj() - self.table.proj()
        priority = int(djcompat.jobs_settings(self.connection).default_priority)
        with self.connection.transaction:
            updated = self.connection.query(
                f"UPDATE {self.name} SET {q('status')} = 'ignore' WHERE {q('status')} IN ('pending', 'error') "
                f"AND {self._keys_in(missing)}"
            ).rowcount
            select = f"SELECT {cols}, 'ignore', %s FROM ({missing.make_sql(fields=self.pk)}) AS {q('_missing')}"
            target = f"{self.name} ({cols}, {q('status')}, {q('priority')})"
            if self._is_postgres:
                inserted = self.connection.query(
                    f"INSERT INTO {target} {select} ON CONFLICT DO NOTHING", args=(priority,)
                ).rowcount
            else:
                inserted = self.connection.query(f"INSERT IGNORE INTO {target} {select}", args=(priority,)).rowcount
            reserved = self.connection.query(
                f"SELECT COUNT(*) FROM {self.name} WHERE {q('status')} = 'reserved' AND {self._keys_in(missing)}"
            ).fetchone()[0]
        return {"ignored": int(updated) + int(inserted), "reserved": int(reserved)}

    def complete(self, done: Iterable[tuple[dict, float]]) -> None:
        """Record successes in one statement: delete their rows, or mark them ``success``
        with completion time and duration when DataJoint's ``jobs.keep_completed`` is set."""
        done = list(done)
        if not done:
            return
        q = self._q
        condition, args = self._keys_condition([key for key, _ in done])
        if djcompat.jobs_settings(self.connection).keep_completed:
            cases = " ".join("WHEN " + " AND ".join(f"{q(k)} = %s" for k in self.pk) + " THEN %s" for _ in done)
            case_args = [v for key, duration in done for v in (*(key[k] for k in self.pk), float(duration))]
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
        q = self._q

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
        q = self._q
        condition, args = self._keys_condition(keys)
        sql = (
            f"UPDATE {self.name} SET {q('status')} = 'pending', {q('reserved_time')} = NULL, "
            f"{q('host')} = '', {q('pid')} = 0, {q('connection_id')} = 0, {q('user')} = '' "
            f"WHERE {q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s AND {condition}"
        )
        cursor = retry_on_conflict(lambda: self.connection.query(sql, args=(self.owner.host, self.owner.pid, *args)))
        return cursor.rowcount

    def retry_errors(self) -> int:
        """Put every ``error`` row back to ``pending`` (``djdask retry``); return how many."""
        q = self._q
        cursor = self.connection.query(
            f"UPDATE {self.name} SET {q('status')} = 'pending', {q('error_message')} = '', "
            f"{q('error_stack')} = NULL, {q('completed_time')} = NULL, {q('reserved_time')} = NULL, "
            f"{q('scheduled_time')} = CURRENT_TIMESTAMP(3) WHERE {q('status')} = 'error'"
        )
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        """Jobs by status: pending, reserved, success, error, ignore, total."""
        return self.jobs.progress()


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
