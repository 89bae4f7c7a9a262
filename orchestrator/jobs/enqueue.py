"""Adding and reshaping rows of a jobs table in set-based statements: the plan step.

:func:`enqueue` adds the missing keys, ``(key_source & restriction) - table``,
as ``pending`` in one ``INSERT ... SELECT`` that leaves existing rows alone
(into an empty table, as a bulk load).  Before a full sweep :func:`tidy` does
what DataJoint's ``jobs.refresh()`` does besides adding keys.  :func:`ignore`
marks missing keys ``ignore`` as ``jobs.ignore(key)`` does, for many keys at once.
:class:`~djdask.jobs.queue.JobQueue` offers each as a method.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from djdask import djcompat
from djdask.jobs.conflicts import is_conflict, retry_on_conflict
from djdask.planning.inputs import gate

if TYPE_CHECKING:
    from djdask.jobs.queue import JobQueue

__all__ = ["among_keys", "enqueue", "ignore", "keys_in", "tidy"]

logger = logging.getLogger(__name__)


def enqueue(
    queue: JobQueue, priority: int | None = None, *, among: Sequence[dict] | None = None, tidy_first: bool = True
) -> int:
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
        priority = djcompat.jobs_settings(queue.connection).default_priority
    empty = False
    if not among:
        empty = _is_empty(queue)
        if not empty and tidy_first:  # a table that was empty has nothing to tidy
            tidy(queue)
    source = among_keys(queue.key_source, among)
    missing = source.proj() - queue.table.proj()
    added = None
    # A full sweep into an empty jobs table (a campaign's first) is a bulk load.
    if not among and not queue.connection.in_transaction and empty:
        target, select = _insert_parts(queue, missing, "pending")
        added = _insert_into_empty(queue, f"INSERT INTO {target} {select}", (int(priority),))
    if added is None:
        added = _insert_new(queue, missing, "pending", int(priority))
    if added >= ANALYZE_AFTER and queue.is_postgres and not queue.connection.in_transaction:
        # Fresh statistics, or PostgreSQL's planner, which thinks the table small until
        # autovacuum analyzes it (a minute or more), sorts every pending row for each claim
        # instead of reading the claim's index in order: 230 ms per claim at 1M keys, 11 ms
        # after this (0.1 s).
        queue.connection.query(f"ANALYZE {queue.name}")
    logger.debug("Enqueued %d keys of %s", added, queue.table.class_name)
    return added


#: An enqueue of this many keys or more analyzes the jobs table (PostgreSQL).
ANALYZE_AFTER = 10_000


def among_keys(source: Any, among: Sequence[dict] | None) -> Any:
    """``source`` restricted to the keys matching one of ``among`` (on the attributes they
    share; all of ``source`` when they share none or ``among`` is empty)."""
    if not among:
        return source
    names = [n for n in source.heading.names if n in among[0]]
    if not names:
        return source
    unique = {tuple(key[n] for n in names) for key in among}
    return source & [dict(zip(names, values)) for values in unique]


def _insert_parts(queue: JobQueue, keys: Any, status: str) -> tuple[str, str]:
    """The target and the ``SELECT`` of an ``INSERT`` of ``keys`` as rows of ``status``
    (the priority an argument)."""
    q = queue.quote
    cols = ", ".join(q(k) for k in queue.pk)
    select = f"SELECT {cols}, '{status}', %s FROM ({keys.make_sql(fields=queue.pk)}) AS {q('_missing')}"
    if status == "pending" and queue.blockers:  # only keys whose inputs have nothing left to make for them
        select += f" WHERE {gate(q('_missing'), queue.pk, queue.blockers, q)}"
    return f"{queue.name} ({cols}, {q('status')}, {q('priority')})", select


def _insert_new(queue: JobQueue, keys: Any, status: str, priority: int) -> int:
    """Insert ``keys`` as rows of ``status``, leaving the keys that have a row alone."""
    target, select = _insert_parts(queue, keys, status)
    if queue.is_postgres:
        sql = f"INSERT INTO {target} {select} ON CONFLICT DO NOTHING"
    else:
        sql = f"INSERT IGNORE INTO {target} {select}"

    def attempt() -> int:
        return queue.connection.query(sql, args=(priority,)).rowcount

    # A deadlock rolls back the whole transaction: retry the statement only when it is its own.
    return attempt() if queue.connection.in_transaction else retry_on_conflict(attempt)


def keys_in(queue: JobQueue, expression: Any) -> str:
    """``(pk) IN (SELECT pk FROM expression)``, for a WHERE clause over the jobs table."""
    cols = ", ".join(queue.quote(k) for k in queue.pk)
    inner = f"SELECT {cols} FROM ({expression.proj().make_sql(fields=queue.pk)}) AS {queue.quote('_keys')}"
    return f"({cols}) IN ({inner})"


def exists_in(queue: JobQueue, expression: Any) -> str:
    """``EXISTS`` a row of ``expression`` with the jobs row's key: correlated, so that both
    backends plan it as a (anti-)join, where ``NOT IN`` over a large subquery is a scan per
    row on PostgreSQL."""
    q = queue.quote
    alias = q("_keys")
    match = " AND ".join(f"{alias}.{q(k)} = {queue.name}.{q(k)}" for k in queue.pk)
    return f"EXISTS (SELECT 1 FROM ({expression.proj().make_sql(fields=queue.pk)}) AS {alias} WHERE {match})"


def _delete(queue: JobQueue, where: str) -> int:
    """``DELETE`` jobs rows, retried on a lock conflict; on MySQL under READ COMMITTED, so
    that reading the key source takes no shared locks on the tables other workers insert into."""

    def attempt() -> int:
        if not queue.is_postgres:
            queue.connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return queue.connection.query(f"DELETE FROM {queue.name} WHERE {where}").rowcount

    return retry_on_conflict(attempt)


def tidy(queue: JobQueue) -> dict[str, int]:
    """What ``refresh()`` does besides adding keys: re-pend ``success`` rows whose key is
    missing again (``jobs.keep_completed``), remove rows whose key has vanished from the
    key source.  Returns the counts: ``re_pended``, ``removed``."""
    q = queue.quote
    counts = {"re_pended": 0, "removed": 0}
    if djcompat.jobs_settings(queue.connection).keep_completed:
        # Deleted here and enqueued again as pending right after, as refresh() does.
        counts["re_pended"] = _delete(
            queue,
            f"{q('status')} = 'success' AND {exists_in(queue, queue.key_source.proj() - queue.table.proj())}",
        )
    # Judged against the unrestricted key source: rows outside a restriction are not vanished.
    counts["removed"] += _delete(queue, f"{q('status')} = 'pending' AND NOT {exists_in(queue, queue.full_key_source)}")
    counts["removed"] += _delete(
        queue,
        f"{q('status')} IN ('success', 'error') AND NOT {exists_in(queue, queue.full_key_source)} "
        f"AND NOT {exists_in(queue, queue.table)}",
    )
    if counts["re_pended"] or counts["removed"]:
        logger.info(
            "%s: %d completed key(s) to make again, %d row(s) of vanished keys removed",
            queue.table.class_name,
            counts["re_pended"],
            counts["removed"],
        )
    return counts


def _is_empty(queue: JobQueue) -> bool:
    return not queue.connection.query(f"SELECT 1 FROM {queue.name} LIMIT 1").fetchall()


def _insert_into_empty(queue: JobQueue, sql: str, args: tuple) -> int | None:
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
    from datajoint.errors import DuplicateError  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    try:
        with _bulk_load(queue):
            return queue.connection.query(sql, args=args).rowcount
    except Exception as err:
        # Another campaign bulk-loaded the same keys at the same moment: its rows won
        # (a duplicate), or InnoDB chose this statement as a deadlock's victim (rolled back).
        if not (isinstance(err, DuplicateError) or is_conflict(err)):
            raise
        logger.debug("Keys of %s enqueued concurrently (%s); enqueueing them one by one", queue.table.class_name, err)
        return None


@contextlib.contextmanager
def _bulk_load(queue: JobQueue) -> Iterator[None]:
    """On MySQL/MariaDB, the session settings under which InnoDB bulk-loads an empty table."""
    if queue.is_postgres:
        yield
        return
    query = queue.connection.query
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


def ignore(queue: JobQueue) -> dict[str, int]:
    """Mark the missing keys of this queue's key source ``ignore``, as DataJoint's
    ``jobs.ignore(key)`` does: no campaign or ``populate(reserve_jobs=True)`` claims
    them.  Keys reserved right now are left to their worker.  Returns ``ignored`` and
    ``reserved`` (left alone)."""
    q = queue.quote
    missing = queue.key_source.proj() - queue.table.proj()
    priority = int(djcompat.jobs_settings(queue.connection).default_priority)
    with queue.connection.transaction:
        updated = queue.connection.query(
            f"UPDATE {queue.name} SET {q('status')} = 'ignore' WHERE {q('status')} IN ('pending', 'error', 'success') "
            f"AND {keys_in(queue, missing)}"
        ).rowcount
        inserted = _insert_new(queue, missing, "ignore", priority)
        reserved = queue.connection.query(
            f"SELECT COUNT(*) FROM {queue.name} WHERE {q('status')} = 'reserved' AND {keys_in(queue, missing)}"
        ).fetchone()[0]
    return {"ignored": int(updated) + int(inserted), "reserved": int(reserved)}
