"""The streaming campaign: claim, dispatch, complete, stream down the DAG.

Every table runs at once.  As soon as keys of a table succeed, the keys of its
child tables that they make ready are enqueued, claimed and dispatched
(:func:`stream`): no table waits for its parent table to finish.  Deeper
tables get free worker slots first and higher Dask priorities, so finished
results appear early.

Each Dask task carries a batch of keys of one table, sized toward a target
task duration from the durations workers report (:mod:`djdask.batching`).
A bounded window of tasks per worker is in flight (:mod:`djdask.inflight`);
the campaign holds nothing else, so its memory does not grow with the number
of missing keys.  The pieces: the pools of workers (:mod:`djdask.pools`),
what a finished batch came to and the retry policy for its transient failures
(:mod:`djdask.outcomes`), the published state (:mod:`djdask.publisher`),
reservations (:mod:`djdask.jobs`) and their leases (:mod:`djdask.leases`).
:class:`Campaign` keeps the loop that ties them together.

:meth:`Campaign.request_stop` (Ctrl-C, SIGTERM) stops claiming, cancels queued
tasks and releases their keys, waits a grace period for running ones, and
returns a summary; running the campaign again resumes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dask.utils import parse_timedelta

from . import config
from .batching import BatchSizer
from .checks import check_count, check_duration, check_make_kwargs, check_priority, table_timeout
from .complete import Completion, stream
from .dashboard import DashboardPlugin, page_link
from .database import redact, secrets
from .executor import PipelinePlugin
from .inflight import InFlight, claim_and_submit
from .jobs import JobQueue, Owner
from .leases import Heartbeat, lease_timeout, recover_orphans, restamp
from .legacy import check_legacy_jobs
from .logs import setup_logging
from .losses import Losses
from .notify import campaign_ended
from .outage import Outage
from .outcomes import RetryPolicy
from .planner import Selection, select
from .pools import Pool, Pools, resources_of
from .progress import TerminalProgress
from .publisher import StatePublisher
from .settings import check as check_settings
from .unreserved import UnreservedQueue, has_jobs_table

__all__ = [
    "Campaign",
    "CampaignSummary",
    "TableState",
    "TableSummary",
    "performance_report",
    "stream",
    "sweep",
    "table_states",
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
    first_done: float | None = None  # seconds after the campaign started
    last_done: float | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.skipped + self.errors


@dataclass
class CampaignSummary:
    """What a campaign did, per table, and how it ended."""

    tables: list[TableSummary] = field(default_factory=list)
    seconds: float = 0.0
    dashboard_link: str | None = None
    cancelled: bool = False
    waiting_for_resources: list[str] = field(default_factory=list)
    traced_peak_bytes: int | None = None  # with djdask.campaign.trace-memory (or PYTHONTRACEMALLOC=1)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.tables)

    @property
    def exit_code(self) -> int:
        """130 when cancelled, 1 when a key failed, else 0."""
        if self.cancelled:
            return 130
        return 1 if self.errors else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": [asdict(t) for t in self.tables],
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "cancelled": self.cancelled,
            "waiting_for_resources": self.waiting_for_resources,
            "traced_peak_bytes": self.traced_peak_bytes,
            "exit_code": self.exit_code,
        }


@dataclass
class TableState:
    """A table's state while the campaign runs."""

    info: Any
    queue: JobQueue | UnreservedQueue
    sizer: BatchSizer
    summary: TableSummary
    resources: dict[str, float] | None
    timeout: float | None = None  # seconds one make() may run
    children: list[TableState] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)  # class names, within the campaign
    rows_before: int = 0  # rows in the table when the campaign started
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
) -> list[TableState]:
    """One state per table of ``selection``, routed to its pool, with its time limit from
    ``timeouts`` (by class name); DataJoint creates missing jobs tables on the way, and a
    table that cannot have one runs unreserved."""
    classes = selection.tables
    graph = selection.graph
    states = {}
    for info in graph:
        cls = classes[info.full_name]
        table = cls()
        if has_jobs_table(table):
            jobs_queue: JobQueue | UnreservedQueue = JobQueue(table, selection.restriction, owner)
        else:
            logger.info(
                "%s has no jobs table (no primary-key attribute comes from a foreign key): "
                "it runs unreserved, as DataJoint's populate() runs it.",
                info.class_name,
            )
            jobs_queue = UnreservedQueue(table, selection.restriction)
        states[info.full_name] = TableState(
            info=info,
            queue=jobs_queue,
            sizer=BatchSizer(target_duration, max_batch),
            summary=TableSummary(info.class_name),
            resources=resources_of(cls),
            timeout=(timeouts or {}).get(info.class_name),
        )
    for name, state in states.items():
        state.children = [states[c] for c in graph.dag.successors(name) if c in states]
        state.parents = [states[p].summary.table for p in graph.dag.predecessors(name) if p in states]
        state.pool = pools.route(state.info.class_name, state.resources)
        state.rows_before = len(classes[name]())
    return list(states.values())


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


@contextlib.contextmanager
def performance_report(client: Any, filename: str | None, secrets: list[str]) -> Iterator[None]:
    """Dask's performance report of ``client``'s cluster, when a file is given.

    Writing it (at the end) may fail, say in a directory that does not exist:
    that is a warning, and neither the campaign's outcome nor an error that
    ended it is replaced by it.
    """
    if not filename:
        yield
        return
    from distributed import performance_report as dask_report

    stack = contextlib.ExitStack()
    stack.enter_context(client.as_current())
    stack.enter_context(dask_report(filename=str(filename)))
    try:
        yield
    finally:
        try:
            stack.close()
        except Exception as err:
            logger.warning(
                "The performance report %s could not be written: %s: %s",
                filename,
                type(err).__name__,
                redact(str(err), secrets),
            )


class Campaign:
    """Populate a pipeline's auto-populated tables on Dask workers.

    Parameters
    ----------
    pipeline : str or Selection
        The importable pipeline module (``"pipeline"``, ``"mylab.pipeline"``),
        or a :class:`~djdask.planner.Selection` already made from one.
    targets : sequence of str, optional
        Tables to populate, with their auto-populated ancestors; default all.
    restrictions : sequence of str or dict, optional
        ``ATTR=VALUE`` strings or a dict limiting the keys.
    workers : int, optional
        Worker processes of the LocalCluster started when no ``client`` is given.
    client : distributed.Client, optional
        Run on this client's cluster instead of starting a LocalCluster.
    progress : TerminalProgress, optional
        Where progress goes; default a quiet one.
    target_duration : str or float, optional
        Seconds (or ``"5s"``) a task should take; default ``djdask.campaign.target-duration``.
    max_calls : int, optional
        Claim at most this many keys in all.
    priority : int, optional
        New jobs get this priority, and only jobs of this priority or more
        urgent (a lower or equal value) are claimed, as in DataJoint's ``populate``.
    cluster : str or mapping, optional
        A cluster profile (``djdask clusters list``), or pools as ``{pool: profile}``
        with a ``default`` pool; default a LocalCluster.
    performance_report : str, optional
        Write Dask's performance report of the campaign (an HTML file) here.
    make_kwargs : dict, optional
        Keyword arguments for every ``make()`` of the campaign, as DataJoint's
        ``populate(make_kwargs=...)`` passes them (to ``make_fetch`` for a
        tripartite ``make``).
    store : str, optional
        Where ``<xarray@>`` arrays go, as ``djdask populate --store``; default
        DataJoint's default store, else djdask's local one.

    The database is chosen as the command line chooses it: DataJoint's
    settings, or djdask's embedded PostgreSQL when none names a user.
    """

    def __init__(
        self,
        pipeline: str | Selection,
        *,
        targets: Sequence[str] = (),
        restrictions: Sequence[str] | dict = (),
        workers: int | None = None,
        client: Any = None,
        progress: TerminalProgress | None = None,
        target_duration: str | float | None = None,
        max_calls: int | None = None,
        priority: int | None = None,
        cluster: str | Mapping[str, str] | None = None,
        performance_report: str | None = None,
        make_kwargs: dict | None = None,
        store: str | None = None,
    ) -> None:
        # Checked before anything reaches the database.
        check_settings()
        self.workers = check_count(workers, "workers")
        self.max_calls = check_count(max_calls, "max_calls")
        target_duration = check_duration(target_duration, "target_duration")
        self.priority = check_priority(priority, "priority")
        self.make_kwargs = check_make_kwargs(make_kwargs)
        self.store = store
        self.selection = pipeline if isinstance(pipeline, Selection) else select(pipeline, targets, restrictions)
        self.timeouts = {cls.__name__: table_timeout(cls) for cls in self.selection.tables.values()}
        self.progress = progress or TerminalProgress(enabled=False)
        self.target_duration = parse_timedelta(config.resolve("campaign.target-duration", target_duration))
        self.max_batch = int(config.get("campaign.max-batch-size"))
        self.window = int(config.get("campaign.batches-per-worker"))
        self.retry = RetryPolicy.from_config()
        self.losses = Losses(wait=parse_timedelta(config.get("campaign.worker-exit-wait")))
        self.grace = parse_timedelta(config.get("campaign.grace-period"))
        self.resize_interval = parse_timedelta(config.get("campaign.resize-interval"))
        self.pools = Pools(cluster, client, window=self.window)
        self.dashboard_link: str | None = None
        self.page_link: str | None = None  # the campaign page of the dashboard
        self.performance_report = performance_report
        # host, pid and user are added from the jobs tables' Owner, as `djdask status` shows them
        self._identity: dict[str, Any] = dict(
            id=uuid.uuid4().hex, module=self.selection.module_name, started=time.time()
        )
        self._secrets: list[str] = []  # masked in everything published and logged; known at run()
        self.publisher = StatePublisher(self.pools, self._identity, self._secrets, self.progress)
        self.owner: Owner | None = None
        self.tolerance = float(parse_timedelta(config.get("campaign.outage-tolerance")))
        self.inflight = InFlight(
            make_kwargs=self.make_kwargs,
            tolerance=self.tolerance,
            walltime_margin=float(config.get("campaign.walltime-margin")),
        )
        self.outage: Outage | None = None  # the campaign's connection's, made in run()
        self.completion = Completion(
            self.inflight,
            self.losses,
            self.retry,
            self.publisher,
            self._secrets,
            priority=self.priority,
            max_lost=int(config.get("campaign.max-lost")),
            db=self._db,
        )
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Ask the running campaign to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- set-up ----------------------------------------------------------------
    def _start_pools(self) -> None:
        self.pools.start(
            self.workers,
            DashboardPlugin(),
            PipelinePlugin(self.selection.module_name),
            lambda text: redact(text, self._secrets),
            self.losses,
        )
        self.dashboard_link = self.pools.default.link
        self.page_link = page_link(self.dashboard_link)

    # -- the loop ----------------------------------------------------------------
    def run(self) -> CampaignSummary:
        """Run the campaign until every reachable key is done or it is stopped."""
        from .stores import configure_store

        t0 = time.monotonic()
        summary = CampaignSummary()
        if not len(self.selection.graph):
            return summary
        connection = self.selection.connection
        configure_store(self.store)  # before any worker starts: they inherit it
        self._secrets[:] = secrets([connection])
        setup_logging(connections=[connection])
        for warning in check_legacy_jobs(connection, {cls.database for cls in self.selection.tables.values()}):
            logger.warning(warning)
        self.owner = Owner.of(connection)
        self.inflight.version = self.owner.version  # on jobs rows and, by the workers, on job metadata
        self._identity.update(host=self.owner.host, pid=self.owner.pid, user=self.owner.user)
        tables = table_states(
            self.selection,
            self.owner,
            self.pools,
            target_duration=self.target_duration,
            max_batch=self.max_batch,
            timeouts=self.timeouts,
        )
        summary.tables = [t.summary for t in tables]
        reserved = [t for t in tables if t.queue.reserved]
        self.outage = Outage(
            connection,
            tolerance=self.tolerance,
            stopping=self._stop.is_set,
            on_change=lambda notice: self.publisher.notify(tables, notice),
            on_return=lambda: self._after_outage(reserved),
        )
        try:
            # Keys left reserved by campaigns or workers that died go back to pending
            # now, without waiting for any timeout.
            recover_orphans(connection, [t.queue.name for t in reserved], lease_timeout=lease_timeout())
            sweep(tables, self.priority, first=True)
            heartbeat = Heartbeat(connection, self.owner)
            for state in reserved:
                heartbeat.watch(state.queue.name)
            self._start_pools()
            for pool in self.pools:
                self.outage.subscribe(pool.client)
        except BaseException:
            self.pools.close()
            unlock(tables)  # the unreserved tables' locks, taken by the sweep
            raise
        summary.dashboard_link = self.dashboard_link
        default = self.pools.default
        remote = default.profile is not None and default.profile.kind.name != "local"
        self.progress.started(self.dashboard_link, self.page_link, default.client.scheduler.address if remote else None)
        heartbeat.start()
        if config.get("campaign.trace-memory") and not tracemalloc.is_tracing():
            tracemalloc.start()  # here, not by PYTHONTRACEMALLOC, which workers would inherit
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()  # measure the loop, not the imports and the cluster start
        failed = True
        try:
            with performance_report(self.pools.default.client, self.performance_report, self._secrets):
                self._loop(tables, summary, t0)
                failed = False
            if tracemalloc.is_tracing():
                summary.traced_peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            self._finish(tables, summary, heartbeat, cancelled=summary.cancelled or failed, t0=t0)
            stopped = summary.cancelled or isinstance(sys.exc_info()[1], KeyboardInterrupt)
            campaign_ended(
                self._identity, summary, "cancelled" if stopped else "failed" if failed else "finished", self._secrets
            )
        return summary

    def _finish(
        self, tables: list[TableState], summary: CampaignSummary, heartbeat: Heartbeat, *, cancelled: bool, t0: float
    ) -> None:
        """The finish step: cancel what is left, close the pools, release the keys still
        held, publish the final state, stop the heartbeat, sum up."""
        for batch in self.losses.drain():
            self.inflight.delay(batch)  # released with the rest
        self.inflight.shutdown(self.pools.close)
        # After the shutdown: released keys count as pending, none as in flight.
        self.publisher.report(tables, finished=True, cancelled=cancelled)
        heartbeat.stop()
        summary.seconds = time.monotonic() - t0
        summary.waiting_for_resources = [
            t.summary.table for t in tables if t.resources is not None and t.slots == 0 and t.pending
        ]
        self.progress.finish(self.publisher.board.rows())
        unlock(tables)

    def _loop(self, tables: list[TableState], summary: CampaignSummary, t0: float) -> None:
        deepest_first = sorted(tables, key=lambda t: -t.info.depth)
        inflight = self.inflight
        self.calls = 0
        self.pools.size(tables)
        sized_at = time.monotonic()
        stop_deadline: float | None = None
        swept = False  # a sweep found keys, but none has been claimed since
        while True:
            now = time.monotonic()
            if stop_deadline is None and self._stop.is_set():
                stop_deadline = now + self.grace
                summary.cancelled = True
                for batch in self.losses.drain():
                    inflight.delay(batch)  # released with the queued ones
                cancelled = inflight.cancel_queued(self.pools.executing())
                logger.warning(
                    "Stopping: %d queued task(s) cancelled and their keys released; waiting up to %.0f s for %d "
                    "running.",
                    cancelled,
                    self.grace,
                    len(inflight),
                )
            if stop_deadline is None:
                if now - sized_at > self.resize_interval:
                    self.pools.size(tables)
                    sized_at = now
                inflight.submit_due(now)
                if self._dispatch(deepest_first):
                    swept = False
                self.pools.update_demand(tables)
            if self.outage is not None:
                self.outage.check()  # a worker waits for the database: wait here too
            for batch, verdict in self.losses.ready():
                self.completion.judged(batch, verdict, t0)
            if not inflight and self.losses:  # a dead worker's report is on its way
                time.sleep(0.1)
                continue
            if not inflight:
                if stop_deadline is not None or self._out_of_calls():
                    return
                due = inflight.next_due()
                if due is not None:
                    time.sleep(max(0.0, due - time.monotonic()))
                    continue
                # Idle: look once more for keys that other workers made ready. If
                # that finds none we can claim (priority, restriction), we are done.
                if swept or not self._db(lambda: sweep(tables, self.priority)):
                    return
                swept = True
                continue
            if stop_deadline is not None and now > stop_deadline:
                logger.warning("Grace period over: %d task(s) still running are stopped.", len(inflight))
                return
            for future, batch in inflight.finished(timeout=0.5):
                self.completion.batch(future, batch, t0)
            self.publisher.report(tables)

    def _db(self, fn):
        """Run a database step of the loop, waiting out an outage (:mod:`djdask.outage`)."""
        return fn() if self.outage is None else self.outage.call(fn)

    def _after_outage(self, reserved: list[TableState]) -> None:
        """The database is back: re-stamp the reservations, give back keys no batch carries."""
        held = self.inflight.held_keys(also=self.losses.batches())
        for state, freed in restamp(self.selection.connection, self.owner, reserved, held):
            state.pending += freed

    def _out_of_calls(self) -> bool:
        return self.max_calls is not None and self.calls >= self.max_calls

    def _dispatch(self, deepest_first: list[TableState]) -> bool:
        """The claim and dispatch steps (:func:`djdask.inflight.claim_and_submit`)."""
        budget = None if self.max_calls is None else self.max_calls - self.calls
        claimed = claim_and_submit(deepest_first, self.inflight, budget, self._db, priority=self.priority)
        self.calls += claimed
        return claimed > 0
