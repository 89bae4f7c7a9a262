"""Leases on reserved keys: the campaign's :class:`LeaseKeeper` renews them (its heartbeat), and
orphans (reservations whose session is gone) go back to pending.

A reservation is live while the session that made it is open.  Liveness is
read from the server, never guessed from age alone:

- MySQL/MariaDB: the owner's ``connection_id`` is listed in
  ``information_schema.PROCESSLIST`` (ids are not reused while the server
  runs; reservations older than the server's start are orphans).
- PostgreSQL: the owner's ``pg_backend_pid()`` is in ``pg_stat_activity`` with
  a ``backend_start`` before the reservation (pids are reused).

A campaign's heartbeat renews ``reserved_time`` of every key it holds, so that
DataJoint's own ``jobs.refresh(orphan_timeout=...)`` leaves live work alone,
and re-stamps ``connection_id`` after a reconnect.  Orphans go back to pending
when a campaign starts, every ``djdask.jobs.orphan-check`` while it runs, and
on ``djdask release``.

``djdask.jobs.lease-timeout`` (off by default) also treats reservations not
renewed for that long as orphans, whatever their session.  It is off because
DataJoint's own ``populate(reserve_jobs=True)`` workers never renew theirs: a
lease timeout shorter than their longest ``make()`` would take their keys.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from dask.utils import parse_timedelta

from djdask import djcompat
from djdask.config import namespace as config
from djdask.db import clock
from djdask.db.connect import import_datajoint
from djdask.db.outage import is_connection_error, reconnect
from djdask.jobs.conflicts import retry_on_conflict
from djdask.jobs.queue import KEY_COLUMNS, Owner, keys_condition

__all__ = [
    "LeaseKeeper",
    "SessionThread",
    "lease_timeout",
    "recover_orphans",
    "renew_leases",
    "restamp",
    "session_gone",
]

logger = logging.getLogger(__name__)


def lease_timeout() -> float | None:
    """``djdask.jobs.lease-timeout`` in seconds, or None when off (the default)."""
    timeout = config.get("jobs.lease-timeout")
    return parse_timedelta(timeout) if timeout else None


def _key_columns(connection: Any, jobs_table: str) -> list[str]:
    known = KEY_COLUMNS.get(jobs_table)
    if known is None:
        known = KEY_COLUMNS[jobs_table] = list(import_datajoint().FreeTable(connection, jobs_table).primary_key)
    return known


def _can_see_all_sessions(connection: Any) -> bool:
    """Whether this MySQL user sees every session in PROCESSLIST (PROCESS privilege)."""
    rows = connection.query(
        "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'PROCESS'"
    ).fetchone()
    return bool(rows[0])


def session_gone(connection: Any, stamp: str = "reserved_time", *, utc: bool = False) -> tuple[str, list]:
    """SQL (on alias ``j``) true for rows whose session (``j.connection_id``, stamped at
    ``j.<stamp>``) has ended: reservations, and campaign records (:mod:`djdask.records.records`).

    ``utc``: the stamp is UTC (the records'), not the session's time (the jobs tables').
    On MySQL/MariaDB every session takes the server's ``time_zone`` (neither DataJoint nor
    djdask sets one), so a jobs-table stamp is compared with the reader's session time."""
    q = connection.adapter.quote_identifier
    if connection.adapter.backend == "postgresql":
        # A backend that started after the stamp reused a dead owner's pid. A jobs-table stamp
        # is in its writer's TimeZone, which no other session can read back (PGTZ, a role's
        # setting): it is taken at the latest instant it can mean (a writer at UTC-12), or a
        # session east of the writer would judge a live owner gone and free its keys. A pid
        # reused within those hours passes for the owner: that orphan waits for it to end.
        late = "1 second" if utc else "12 hours 1 second"
        return (
            "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = j.connection_id "
            f"AND a.backend_start <= (j.{q(stamp)} AT TIME ZONE 'UTC') + INTERVAL '{late}')",
            [],
        )
    uptime = int(connection.query("SHOW GLOBAL STATUS LIKE 'Uptime'").fetchone()[1])
    now = clock.utc_now_sql(connection) if utc else clock.session_now_sql(connection)
    condition = (
        "(NOT EXISTS (SELECT 1 FROM information_schema.PROCESSLIST p WHERE p.ID = j.connection_id) "
        f"OR j.{q(stamp)} < {now} - INTERVAL %s SECOND)"
    )
    args: list[Any] = [uptime]
    if not _can_see_all_sessions(connection):
        # Without PROCESS only our own user's sessions are listed: judge only those.
        condition += " AND j.user = %s"
        args.append(connection.get_user())
    return condition, args


def recover_orphans(
    connection: Any, jobs_tables: Iterable[str], *, lease_timeout: float | None = None
) -> dict[str, int]:
    """Put orphaned reservations back to ``pending``; return how many per jobs table.

    Parameters
    ----------
    connection : datajoint.Connection
    jobs_tables : iterable of str
        Full names of ``~~`` tables.
    lease_timeout : float, optional
        Seconds; reservations not renewed for this long are orphans too.
    """
    q = connection.adapter.quote_identifier
    # The jobs tables' clock (the session's time), naive as their columns read.
    snapshot = connection.query(f"SELECT {clock.session_now_sql(connection)}").fetchone()[0]
    dead, dead_args = session_gone(connection)
    if lease_timeout:
        dead = f"({dead} OR j.reserved_time < %s - {connection.adapter.interval_expr(int(lease_timeout), 'second')})"
        dead_args = [*dead_args, snapshot]
    recovered: dict[str, int] = {}
    for table in jobs_tables:
        pk = _key_columns(connection, table)
        cols = ", ".join(f"j.{q(c)}" for c in pk)
        # Only rows reserved a second before the snapshot: a session that made
        # one is listed unless it has ended.
        rows = connection.query(
            f"SELECT {cols} FROM {table} j WHERE j.{q('status')} = 'reserved' "
            f"AND j.{q('reserved_time')} < %s - {connection.adapter.interval_expr(1, 'second')} AND {dead}",
            args=(snapshot, *dead_args),
        ).fetchall()
        count = 0
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            in_list, key_args = keys_condition(q, pk, chunk, backend=connection.adapter.backend)
            sql = (
                f"UPDATE {table} SET {q('status')} = 'pending', {q('reserved_time')} = NULL, {q('host')} = '', "
                f"{q('pid')} = 0, {q('connection_id')} = 0, {q('user')} = '' "
                f"WHERE {q('status')} = 'reserved' AND {q('reserved_time')} < %s AND {in_list}"
            )
            args = (snapshot, *key_args)
            count += retry_on_conflict(lambda sql=sql, args=args: connection.query(sql, args=args)).rowcount
        if count:
            logger.warning("Freed %d orphaned reservations in %s", count, table)
        recovered[table] = count
    return recovered


def renew_leases(connection: Any, jobs_tables: Iterable[str], owner: Owner, connection_id: int) -> int:
    """Renew ``reserved_time`` of every key ``owner`` holds and stamp ``connection_id``."""
    q = connection.adapter.quote_identifier
    total = 0
    for table in jobs_tables:
        sql = (
            f"UPDATE {table} SET {q('reserved_time')} = CURRENT_TIMESTAMP(3), {q('connection_id')} = %s "
            f"WHERE {q('status')} = 'reserved' AND {q('host')} = %s AND {q('pid')} = %s"
        )
        args = (connection_id, owner.host, owner.pid)
        total += retry_on_conflict(lambda sql=sql, args=args: connection.query(sql, args=args)).rowcount
    return total


def restamp(connection: Any, owner: Owner, tables: Iterable[Any], held: dict[int, list[dict]]) -> list[tuple[Any, int]]:
    """After the campaign's connection came back from an outage: stamp its new session on
    every reservation it holds (before an orphan check sees the old session gone and frees
    keys its workers are making), then give back keys that no batch carries (a claim whose
    commit went through while its answer was lost).  ``tables`` are table states with a
    jobs ``queue``; ``held``: the keys in flight by ``id`` of the state.  Returns
    ``(state, keys released)`` for the tables that had any."""
    tables = list(tables)
    renew_leases(connection, [t.queue.name for t in tables], owner, djcompat.live_connection_id(connection))
    released = []
    for state in tables:
        freed = state.queue.release_all_but(held.get(id(state), []))
        if freed:
            logger.warning("%s: %d key(s) reserved by a claim the outage cut short, released", state.queue.name, freed)
            released.append((state, freed))
    return released


class SessionThread:
    """A daemon thread with its own database session (a clone of ``connection``) that calls
    :meth:`tick` every ``interval`` seconds until :meth:`stop`.  A lost connection is an
    outage to wait out (reconnect, try again next round); any other error is a warning."""

    thread_name = "djdask-session"
    what = "background database work"

    def __init__(self, connection: Any, interval: float) -> None:
        self.connection = connection
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def tick(self, conn: Any) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        conn = djcompat.clone_connection(self.connection)
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.tick(conn)
                except Exception as err:  # keep going: the next round may succeed
                    if not is_connection_error(err):
                        logger.warning("%s failed: %s", self.what, err)
                        continue
                    # An outage: the campaign says so, and re-stamps what it holds when it ends.
                    logger.debug("%s waits for the database: %s", self.what, err)
                    reconnect(conn)
        finally:
            try:
                conn.close()
            except Exception:
                pass


class LeaseKeeper(SessionThread):
    """A thread, with its own database session, that keeps a campaign's leases alive.

    Every ``djdask.jobs.heartbeat`` it renews the reservations of ``owner`` in
    the watched jobs tables and stamps the campaign session's current id;
    every ``djdask.jobs.orphan-check`` it frees orphans.

    Parameters
    ----------
    connection : datajoint.Connection
        The campaign's own connection: its live session id is what
        reservations name.  The heartbeat opens a second one to the same server.
    owner : Owner
    """

    thread_name = "djdask-heartbeat"
    what = "Lease heartbeat"

    def __init__(self, connection: Any, owner: Owner, idle: Callable[[], bool] | None = None) -> None:
        super().__init__(connection, parse_timedelta(config.get("jobs.heartbeat")))
        self.owner = owner
        # A following campaign that holds no key renews nothing and leaves orphans to its full checks.
        self.idle = idle
        self.orphan_interval = parse_timedelta(config.get("jobs.orphan-check"))
        self.lease_timeout = lease_timeout()
        self._tables: set[str] = set()
        self._lock = threading.Lock()
        self._since_orphans = 0.0
        self.renewals = 0

    def watch(self, jobs_table: str) -> None:
        """Include a jobs table in the renewals."""
        with self._lock:
            self._tables.add(jobs_table)

    def tick(self, conn: Any) -> None:
        if self.idle is not None and self.idle():
            return
        with self._lock:
            tables = sorted(self._tables)
        renewed = renew_leases(conn, tables, self.owner, djcompat.live_connection_id(self.connection))
        self.renewals += 1
        logger.debug("Renewed %d leases", renewed)
        self._since_orphans += self.interval
        if self._since_orphans >= self.orphan_interval:
            self._since_orphans = 0.0
            recover_orphans(conn, tables, lease_timeout=self.lease_timeout)
