"""Following a pipeline (``djdask populate --follow``): keys that become missing after the start.

A following campaign does not end when nothing is missing.  Every
``djdask.campaign.follow-interval`` it asks the server, in one statement, which of the
pipeline's tables changed since its last look, and sweeps (enqueues set-based, as the
start does) only the auto-populated tables at or below a changed one:

- PostgreSQL: ``pg_stat_user_tables``' insert, update and delete counters of the
  pipeline's schemas.  The server keeps them per table and, since PostgreSQL 15, in
  shared memory; a session that wrote reports its counts when it goes idle (at most
  a second later, or 10 s when it reported less than a second before).
- MySQL and MariaDB: ``information_schema.tables``' ``update_time`` (InnoDB keeps it
  in memory; MySQL 8 is asked not to cache it).  It counts whole seconds, so a table
  changed in the second of the last look is swept again at the next.

The counters say "something changed", never what: a change the campaign made itself
(its own rows) sweeps those tables once more, which finds nothing.  What they could
miss (counters lost with a crashed server come back as a change; a ``key_source``
naming a table of a schema the pipeline does not declare) is caught by a full sweep
every ``djdask.campaign.full-check-interval``.

With ``djdask.campaign.retry-errors-after`` set, a look also puts the error rows older
than that back to pending (one statement per table with a jobs table, at most every half
of that setting), and sweeps their tables: a key whose make() failed on a passing cause
is made again without a `djdask retry`.

Which tables lie below a change is read from DataJoint's dependency graph (foreign
keys, part tables folded into their masters) and from the inputs a table's
``key_source`` names beyond its foreign keys (:mod:`djdask.planning.inputs`).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx
from dask.utils import parse_timedelta

from djdask.campaign.tables import sweep
from djdask.config import namespace as config
from djdask.jobs.leases import lease_timeout, recover_orphans
from djdask.planning import PipelineGraph, master_name, split_name

if TYPE_CHECKING:
    from djdask.campaign.tables import TableState

__all__ = ["Changes", "Follower", "upstream_tables"]

logger = logging.getLogger(__name__)


def upstream_tables(dependencies: Any, graph: PipelineGraph) -> dict[str, frozenset[str]]:
    """For each auto-populated table of ``graph``: itself, every table it depends on through
    foreign keys (part tables as their masters), and the inputs its ``key_source`` names with
    their own ancestors.  A change in any of them may make keys of the table missing."""
    folded = nx.DiGraph()
    for parent, child in dependencies.edges():
        if parent.startswith(("`", '"')) and child.startswith(("`", '"')):
            a, b = master_name(parent), master_name(child)
            if a != b:
                folded.add_edge(a, b)
    upstream = {}
    for table in graph.order:
        found = {table}
        for start in (table, *graph.inputs.get(table, ())):
            found.add(start)
            if start in folded:
                found |= nx.ancestors(folded, start)
        upstream[table] = frozenset(found)
    return upstream


class Changes:
    """One statement that gives a change mark for every table of ``schemas`` (jobs tables and
    djdask's own, whose names start with ``~``, left out), with part tables' marks under their
    master's name."""

    def __init__(self, connection: Any, schemas: Sequence[str]) -> None:
        self.connection = connection
        self.schemas = sorted(set(schemas))
        self.postgres = connection.adapter.backend == "postgresql"
        self.q = connection.adapter.quote_identifier
        marks = ", ".join(["%s"] * len(self.schemas))
        if self.postgres:
            self.sql = (
                "SELECT schemaname, relname, n_tup_ins + n_tup_upd + n_tup_del, NULL FROM pg_stat_user_tables "
                f"WHERE schemaname IN ({marks})"
            )
            self.mysql8 = False
        else:
            self.sql = (
                "SELECT table_schema, table_name, update_time, NOW() FROM information_schema.tables "
                f"WHERE table_schema IN ({marks})"
            )
            version = str(connection.query("SELECT VERSION()").fetchone()[0])
            self.mysql8 = "mariadb" not in version.lower() and not version.startswith("5.")

    def probe(self) -> tuple[dict[str, tuple], datetime.datetime | None]:
        """The change mark of each table (masters: the tuple of their own and their parts'),
        and the server's time (MySQL; None on PostgreSQL)."""
        if self.mysql8:  # MySQL 8 caches information_schema's statistics for a day by default
            self.connection.query("SET SESSION information_schema_stats_expiry = 0")
        marks: dict[str, list] = {}
        server_now = None
        for schema, table, mark, now in self.connection.query(self.sql, args=tuple(self.schemas)).fetchall():
            if table.startswith("~"):
                continue
            server_now = now
            marks.setdefault(master_name(f"{self.q(schema)}.{self.q(table)}"), []).append((table, mark))
        return {name: tuple(sorted(found, key=lambda p: p[0])) for name, found in marks.items()}, server_now


class Follower:
    """When a following campaign looks for new work, and where.

    :meth:`baseline` takes the marks before the campaign's first sweep; :meth:`look` (when
    :meth:`due`) probes, sweeps the tables below what changed, and says whether it found
    keys to claim.
    """

    def __init__(
        self,
        connection: Any,
        graph: PipelineGraph,
        *,
        interval: float,
        full_every: float,
        retry_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.changes = Changes(connection, _schemas(connection.dependencies))
        self.upstream = upstream_tables(connection.dependencies, graph)
        self.interval, self.full_every, self.clock = interval, full_every, clock
        self.retry_after = retry_after  # seconds an error row stays before a look re-pends it; None: never
        self.retried_at = clock()
        self.retried = 0  # error rows re-pended
        self.marks: dict[str, tuple] | None = None
        self.server_now: datetime.datetime | None = None
        self.next_look = self.full_at = clock()
        self.looks = 0
        self.last_look: float | None = None  # wall-clock times, for the record and the page
        self.last_found: float | None = None
        self.idle_since: float | None = None
        self.enqueued = 0

    @classmethod
    def start(cls, connection: Any, graph: PipelineGraph) -> Follower:
        """A follower with the intervals of ``djdask.campaign``, its baseline taken."""
        follower = cls(
            connection,
            graph,
            interval=float(parse_timedelta(config.get("campaign.follow-interval"))),
            full_every=float(parse_timedelta(config.get("campaign.full-check-interval"))),
            retry_after=_seconds(config.get("campaign.retry-errors-after")),
        )
        follower.baseline()
        return follower

    def baseline(self) -> None:
        """The marks the first look compares with (before the campaign's first sweep: a change
        after it is never missed)."""
        self.marks, self.server_now = self.changes.probe()
        self.next_look = self.full_at = self.clock() + self.interval

    def state(self) -> dict[str, Any]:
        """What the record and the page show of it: its interval, looks, and when it last
        looked and last found work (Unix times)."""
        return {
            "interval": self.interval,
            "looks": self.looks,
            "last_look": self.last_look,
            "last_found": self.last_found,
            "idle_since": self.idle_since,
            "next_look_in": max(0.0, self.next_look - self.clock()),
            "enqueued": self.enqueued,
            "retried": self.retried,
        }

    def is_idle(self) -> bool:
        """Nothing to do since the last look found none (the keepers' threads ask)."""
        return self.idle_since is not None

    def due(self, now: float | None = None) -> bool:
        return (self.clock() if now is None else now) >= self.next_look

    def wait_for_work(
        self,
        tables: Sequence[TableState],
        priority: int | None,
        db: Callable[[Callable[[], Any]], Any],
        swept: bool,
        stop: threading.Event,
    ) -> None:
        """The idle step of a following campaign: right after work (``swept`` false) and then
        every interval, look (through ``db``, which waits out an outage); else wait up to half
        a second, or until ``stop``."""
        if (not swept or self.due()) and db(lambda: self.look(tables, priority)):
            return
        self.idle_since = self.idle_since or time.time()
        stop.wait(max(0.05, min(0.5, self.next_look - self.clock())))

    def changed(self, marks: dict[str, tuple], server_now: datetime.datetime | None) -> set[str]:
        """Tables whose mark differs from the last look's; on MySQL also those changed in the
        second of the last look (update_time counts whole seconds)."""
        last = self.marks or {}
        found = {name for name in marks.keys() | last.keys() if marks.get(name) != last.get(name)}
        if self.server_now is not None:
            since = self.server_now - datetime.timedelta(seconds=1)
            for name, parts in marks.items():
                if any(isinstance(mark, datetime.datetime) and mark >= since for _, mark in parts):
                    found.add(name)
        return found

    def look(self, tables: Sequence[TableState], priority: int | None) -> bool:
        """Probe; sweep the tables below a change (all of them every ``full_every``); True when
        something is claimable."""
        now = self.clock()
        self.next_look = now + self.interval
        self.looks += 1
        self.last_look = time.time()
        marks, server_now = self.changes.probe()
        full = now - self.full_at >= self.full_every
        changed = self.changed(marks, server_now)
        self.marks, self.server_now = marks, server_now
        if full:  # also the orphan check that the lease keeper leaves to these while idle
            self.full_at = now
            below = list(tables)
            reserved = [t.queue.name for t in tables if t.queue.reserved]
            recover_orphans(self.changes.connection, reserved, lease_timeout=lease_timeout())
        else:
            below = [t for t in tables if self.upstream.get(t.info.full_name, frozenset()) & changed]
        below += [t for t in self.retry_errors(tables, now) if t not in below]
        if not below:
            logger.debug("Follow look %d: nothing changed", self.looks)
            return False
        before = sum(t.summary.enqueued for t in below)
        found = sweep(below, priority)
        enqueued = sum(t.summary.enqueued for t in below) - before
        self.enqueued += enqueued
        logger.debug(
            "Follow look %d: %s changed; %s swept%s; %d key(s) enqueued",
            self.looks,
            ", ".join(sorted(changed)) or "nothing",
            len(below),
            " (the full check)" if full else "",
            enqueued,
        )
        if enqueued or found:
            self.last_found = time.time()
        return found

    def retry_errors(self, tables: Sequence[TableState], now: float) -> list[TableState]:
        """With ``retry_after``: put error rows older than it back to pending, at most every
        half of it (each time one statement per table with a jobs table); the tables that had
        some."""
        if self.retry_after is None or now - self.retried_at < self.retry_after / 2:
            return []
        self.retried_at = now
        retried = []
        for state in tables:
            if not state.queue.reserved:  # no jobs table, no error rows: a failed key stays missing
                continue
            count = state.queue.retry_errors(older_than=self.retry_after)
            if count:
                self.retried += count
                retried.append(state)
                # Its errors are tried again: counted as retries, and as errors again only if they fail
                # again (a campaign stopped after they were made exits 0).
                again = min(count, state.summary.errors)
                state.summary.errors -= again
                state.summary.retries += again
                logger.info(
                    "%s: %d error row(s) older than %.0f s back to pending (djdask.campaign.retry-errors-after).",
                    state.summary.table,
                    count,
                    self.retry_after,
                )
        return retried


def _seconds(value: Any) -> float | None:
    return None if value is None else float(parse_timedelta(value))


def _schemas(dependencies: Any) -> list[str]:
    """The schemas whose tables DataJoint's dependency graph holds (those the pipeline loaded)."""
    names = set()
    for node in dependencies.nodes:
        try:
            names.add(split_name(node)[0])
        except ValueError:  # an alias node of DataJoint's graph (a renamed foreign key)
            continue
    return sorted(names)
