"""The tables of a campaign: each one's state while it runs, and the sweep that enqueues them.

:func:`table_states` makes a :class:`TableState` per table of a selection (its
jobs queue, batch sizer, summary, pool and time limit, its parents and
children in the campaign); :func:`sweep` is the plan step's enqueue, at the
start and when the campaign is idle; :func:`unlock` releases the advisory
locks of the tables that run unreserved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

from djdask import djcompat
from djdask.campaign.batching import BatchSizer
from djdask.campaign.pools import resources_of
from djdask.campaign.split import check_splittable
from djdask.jobs.queue import JobQueue, Owner
from djdask.jobs.unreserved import UnreservedQueue
from djdask.planning.reservable import why_unreserved

if TYPE_CHECKING:
    from djdask.campaign.pools import Pool, Pools
    from djdask.planning.planner import Selection

__all__ = [
    "TableState",
    "TableSummary",
    "fewest_explaining",
    "group_commit_hints",
    "order_hints",
    "sweep",
    "table_states",
    "unlock",
]

logger = logging.getLogger(__name__)


@dataclass
class TableSummary:
    """What a campaign did to one table."""

    table: str
    enqueued: int = 0
    succeeded: int = 0
    skipped: int = 0
    errors: int = 0
    retries: int = 0
    tasks: int = 0
    largest_batch: int = 0
    seconds: float = 0.0
    make_seconds: float = 0.0  # the make() durations of its keys made, summed
    commit_seconds: float = 0.0  # of which their commits (keys made one per transaction)
    group_commit: bool = False
    deferred: int = 0  # keys whose make() raised while earlier tables had keys to make: run again after
    deferred_made: int = 0  # ... of which made when they ran again
    deferred_for: list[str] = field(default_factory=list)  # the fewest tables that explain their waits
    first_done: float | None = None  # seconds after the campaign started
    last_done: float | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.skipped + self.errors


@dataclass
class TableState:
    """A table's state while the campaign runs."""

    info: Any
    queue: JobQueue | UnreservedQueue
    sizer: BatchSizer
    summary: TableSummary
    resources: dict[str, float] | None
    timeout: float | None = None  # seconds one make() may run
    group: tuple[int, float] | None = None  # group commit: most keys and seconds of make() per transaction
    tripartite: bool = False  # its make() runs its own transaction (no group commit)
    split: bool = False  # its pool has no database access: fetch, compute, insert as three tasks
    children: list[TableState] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)  # class names, within the campaign
    ancestors: list[TableState] = field(default_factory=list)  # within the campaign, all levels
    #: Tables of the campaign declared before this one that are neither its ancestors nor its
    #: descendants: what its make() may read that its dependencies do not name (djdask.planning.inputs).
    earlier: list[TableState] = field(default_factory=list)
    #: For each batch of its keys made after waiting for ``earlier`` tables: those of them
    #: done meanwhile (one of them is what its make() read).
    waits: list[frozenset[str]] = field(default_factory=list)
    rows_before: int = 0  # rows in the table when the campaign started
    rows_estimated: bool = False  # rows_before is the server's estimate (a huge table)
    pending: int = 0  # estimate: claimable keys in the jobs table
    tasks: int = 0  # tasks in flight
    keys: int = 0  # keys in flight
    slots: int = 0  # most tasks in flight at once (eligible workers x window)
    warned: bool = False  # that no worker offers its resources
    started: float | None = None
    pool: Pool | None = None

    def record(self, succeeded: int, skipped: int, failed: int, t0: float) -> None:
        """Count a finished batch's keys in the summary, with when they finished."""
        self.summary.succeeded += succeeded
        self.summary.skipped += skipped
        self.summary.errors += failed
        if succeeded or skipped or failed:
            now = time.monotonic()
            if self.summary.first_done is None:
                self.summary.first_done = now - t0
            self.summary.last_done = now - t0
            self.summary.seconds = now - (self.started or t0)

    def warn_unserved(self) -> None:
        """Say once that no worker offers the resources this table's keys wait for."""
        if self.slots == 0 and self.pending and not self.warned:
            self.warned = True
            logger.warning(
                "No worker offers the resources %s that %s needs; its keys stay pending.",
                self.resources,
                self.summary.table,
            )


def table_states(
    selection: Selection,
    owner: Owner,
    pools: Pools,
    *,
    target_duration: float,
    max_batch: int,
    timeouts: Mapping[str, float | None] | None = None,
    groups: Mapping[str, tuple[int, float]] | None = None,
) -> list[TableState]:
    """One state per table of ``selection``, routed to its pool, with its time limit from
    ``timeouts`` and its group commit from ``groups`` (by class name); DataJoint creates missing jobs tables on the way, and a
    table that cannot have one runs unreserved."""
    classes = selection.tables
    graph = selection.graph
    states = {}
    for info in graph:
        cls = classes[info.full_name]
        table = cls()
        reason = why_unreserved(table)
        if reason is None:
            jobs_queue: JobQueue | UnreservedQueue = JobQueue(table, selection.restriction, owner)
        else:
            logger.info(
                "%s has no jobs table (%s): it runs unreserved, as DataJoint's populate() runs it.",
                info.class_name,
                reason,
            )
            jobs_queue = UnreservedQueue(table, selection.restriction)
        states[info.full_name] = TableState(
            info=info,
            queue=jobs_queue,
            sizer=BatchSizer(target_duration, max_batch),
            summary=TableSummary(info.class_name),
            resources=resources_of(cls),
            timeout=(timeouts or {}).get(info.class_name),
            group=(groups or {}).get(info.class_name),
            tripartite=djcompat.is_tripartite(cls),
        )
        states[info.full_name].summary.group_commit = info.class_name in (groups or {})
    declared = {name: number for number, name in enumerate(classes)}
    for name, state in states.items():
        above, below = nx.ancestors(graph.dag, name), nx.descendants(graph.dag, name)
        related = above | below
        state.ancestors = [states[a] for a in graph.order if a in above and a in states]
        state.earlier = [
            other
            for other_name, other in states.items()
            if declared[other_name] < declared[name] and other_name not in related
        ]
        blockers = [states[b] for b in graph.blockers(name) if b in states]
        state.queue.blockers = [b.queue for b in blockers]
        if blockers:
            logger.info(
                "%s waits, key by key, for %s: its key_source or djdask_after names tables its foreign keys do not.",
                state.summary.table,
                ", ".join(b.summary.table for b in blockers),
            )
        state.children = [states[c] for c in graph.dag.successors(name) if c in states]
        state.parents = [states[p].summary.table for p in graph.dag.predecessors(name) if p in states]
        state.pool = pools.route(state.info.class_name, state.resources)
        if state.pool.without_database:  # make_compute there, fetch and insert on this host's side
            check_splittable(state.info.class_name, classes[name], state.pool.name, state.pool.profile.name)
            state.split = True
        state.rows_before, state.rows_estimated = starting_rows(classes[name]())
    return list(states.values())


#: A table the server estimates past this many rows is not counted when a campaign starts
#: (a COUNT(*) reads every row: seconds per 10 million): the page shows the estimate, marked ~.
EXACT_COUNT_LIMIT = 1_000_000


def starting_rows(table: Any) -> tuple[int, bool]:
    """How many rows ``table`` has, and whether that is the server's estimate (past
    :data:`EXACT_COUNT_LIMIT`, from its statistics) rather than a count."""
    postgres = table.connection.adapter.backend == "postgresql"
    sql = (
        "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s"
        if postgres
        else "SELECT table_rows FROM information_schema.tables WHERE table_schema = %s AND table_name = %s"
    )
    found = table.connection.query(sql, args=(table.database, table.table_name)).fetchall()
    estimate = int(found[0][0] or 0) if found else 0  # PostgreSQL: -1 before the first ANALYZE
    if estimate > EXACT_COUNT_LIMIT:
        return estimate, True
    return len(table), False


def sweep(tables: Sequence[TableState], priority: int | None, *, first: bool = False) -> bool:
    """The plan step's enqueue: every table in full, at the start and when idle (keys that
    other workers made ready); True when something is claimable.  Only the first sweep
    tidies the jobs tables as ``refresh()`` does (a key whose make() inserts no row would
    otherwise be re-pended, and made, at every idle sweep)."""
    found = False
    for state in tables:
        state.summary.enqueued += state.queue.enqueue(priority, tidy_first=first)
        state.pending = state.queue.counts()["pending"]
        found = found or (state.pending > 0 and state.slots > 0)
    return found


def unlock(tables: Sequence[TableState]) -> None:
    """Release the advisory locks of the tables that run unreserved (a lock the database
    lost with its session is gone already: that is no error)."""
    for state in tables:
        if not state.queue.reserved:
            try:
                state.queue.unlock()
            except Exception as err:
                logger.debug("The lock of %s was not released: %s", state.summary.table, err)


#: The campaign suggests group commit for a table whose keys' commits took at least this
#: share of their make() time, over at least GROUP_COMMIT_HINT_KEYS keys.
GROUP_COMMIT_HINT_SHARE = 0.25
GROUP_COMMIT_HINT_KEYS = 100


def fewest_explaining(waits: Sequence[frozenset[str]]) -> list[str]:
    """The fewest tables such that each wait holds one of them (a greedy hitting set: the
    table in most waits first, ties by name), sorted.  A key that waited while three
    tables were busy, and was made once all three were done, says little; another made
    once only one of them was done says which one its make() reads."""
    left = [wait for wait in waits if wait]
    chosen: list[str] = []
    while left:
        counts: dict[str, int] = {}
        for wait in left:
            for name in wait:
                counts[name] = counts.get(name, 0) + 1
        best = min(counts, key=lambda name: (-counts[name], name))
        chosen.append(best)
        left = [wait for wait in left if best not in wait]
    return sorted(chosen)


def order_hints(tables: Sequence[TableState]) -> list[str]:
    """One line per table whose keys failed while earlier-declared tables still had keys to
    make and were made once those were done: its make() reads them, and the campaign should
    order them from the start."""
    hints = []
    for state in tables:
        made = state.summary
        if not made.deferred_made:
            continue
        names = ", ".join(made.deferred_for)
        hints.append(
            f"{made.table}: {made.deferred_made} of its keys failed while {names} still had keys to make, and were made "
            f"once {'it was' if len(made.deferred_for) == 1 else 'they were'} done: its make() reads {names}, which "
            f"its foreign keys do not name. Declare it so that campaigns order them from the start: "
            f"djdask_after = [{names}] on {made.table}, or djdask.campaign.after: {{{made.table}: [{names}]}}."
        )
    return hints


def group_commit_hints(tables: Sequence[TableState]) -> list[str]:
    """One line per table whose make() is dominated by its commit (measured on the workers):
    group commit would share one commit among many keys."""
    hints = []
    for state in tables:
        made = state.summary
        if state.group or state.tripartite or made.succeeded < GROUP_COMMIT_HINT_KEYS or made.make_seconds <= 0:
            continue
        share = made.commit_seconds / made.make_seconds
        if share >= GROUP_COMMIT_HINT_SHARE:
            hints.append(
                f"{made.table}: its commit took {share:.0%} of each key's {made.make_seconds / made.succeeded * 1000:.1f} "
                f"ms. Group commit shares one commit among many keys: set djdask_group_commit = True on "
                f"{made.table}, or list it in djdask.campaign.group-commit."
            )
    return hints
