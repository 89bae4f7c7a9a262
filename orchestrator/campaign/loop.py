"""The streaming campaign: claim, dispatch, complete, stream down the DAG.

Every table runs at once.  As soon as keys of a table succeed, the keys of its
child tables that they make ready are enqueued, claimed and dispatched
(:func:`stream`): no table waits for its parent table to finish.  Deeper
tables get free worker slots first and higher Dask priorities, so finished
results appear early.

Each Dask task carries a batch of keys of one table, sized toward a target
task duration from the durations workers report (:mod:`djdask.campaign.batching`).
A bounded window of tasks per worker is in flight (:mod:`djdask.campaign.inflight`);
the campaign holds nothing else, so its memory does not grow with the number
of missing keys.  The pieces: the pools of workers (:mod:`djdask.campaign.pools`),
what a finished batch came to and the retry policy for its transient failures
(:mod:`djdask.campaign.outcomes`), the published state (:mod:`djdask.monitor.publisher`),
reservations (:mod:`djdask.jobs.queue`) and their leases (:mod:`djdask.jobs.leases`).
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from dask.utils import parse_timedelta
from distributed import performance_report as dask_report

from djdask.campaign.checks import (
    check_count,
    check_duration,
    check_make_kwargs,
    check_priority,
    group_commits,
    table_timeout,
)
from djdask.campaign.complete import Completion, stream
from djdask.campaign.follow import Follower
from djdask.campaign.inflight import InFlight, claim_and_submit
from djdask.campaign.losses import Losses
from djdask.campaign.outcomes import RetryPolicy
from djdask.campaign.pools import Pools
from djdask.campaign.tables import (
    TableState,
    TableSummary,
    group_commit_hints,
    order_hints,
    sweep,
    table_states,
    unlock,
)
from djdask.config import namespace as config
from djdask.config.schema import check as check_settings
from djdask.db import capacity
from djdask.db.connect import redact, secrets
from djdask.db.outage import Outage
from djdask.djcompat import dependencies_loaded_once
from djdask.errors import DjdaskError
from djdask.jobs.leases import LeaseKeeper, lease_timeout, recover_orphans, restamp
from djdask.jobs.legacy import check_legacy_jobs
from djdask.jobs.queue import Owner
from djdask.logs import setup_logging
from djdask.monitor.dashboard import DashboardPlugin
from djdask.monitor.progress import TerminalProgress
from djdask.monitor.publisher import StatePublisher
from djdask.planning.planner import Selection, select
from djdask.records.accounting import Accounting
from djdask.records.notify import campaign_ended, long_outage
from djdask.records.records import CampaignRecord, new_id
from djdask.worker.executor import PipelinePlugin

__all__ = [
    "Campaign",
    "CampaignSummary",
    "TableState",
    "TableSummary",
    "ending",
    "performance_report",
    "stream",
    "sweep",
    "table_states",
]

logger = logging.getLogger(__name__)


@dataclass
class CampaignSummary:
    """What a campaign did, per table, and how it ended."""

    tables: list[TableSummary] = field(default_factory=list)
    seconds: float = 0.0
    dashboard_link: str | None = None  # the default pool's page that answers: Dask's dashboard, else the campaign page
    cancelled: bool = False
    following: bool = False  # a --follow campaign: stopped is its normal end
    waiting_for_resources: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # e.g. tables group commit would speed up
    traced_peak_bytes: int | None = None  # with djdask.campaign.trace-memory (or PYTHONTRACEMALLOC=1)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.tables)

    @property
    def exit_code(self) -> int:
        """130 when cancelled (a following campaign's stop is its normal end), 1 when a key
        failed, else 0."""
        if self.cancelled and not self.following:
            return 130
        return 1 if self.errors else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": [asdict(t) for t in self.tables],
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "cancelled": self.cancelled,
            "waiting_for_resources": self.waiting_for_resources,
            "hints": self.hints,
            "traced_peak_bytes": self.traced_peak_bytes,
            "exit_code": self.exit_code,
        }


def ending(summary: CampaignSummary, error: BaseException | None, handing_over: bool = False) -> tuple[str, int]:
    """How a campaign ended (its record's state) and its exit code, as the command line gives them;
    ``submitted`` when it stopped to hand over to a successor controller."""
    if handing_over and error is None:
        return "submitted", 0
    if summary.following and summary.cancelled and error is None:
        return "finished", summary.exit_code
    if summary.cancelled or isinstance(error, KeyboardInterrupt):
        return "cancelled", 130
    if error is not None:
        return "failed", 2 if isinstance(error, DjdaskError) else 1
    return "finished", summary.exit_code


def open_step(campaign: Campaign, connection: Any, summary: CampaignSummary) -> list[TableState]:
    """The open step: the store, the secrets to mask and the logging set up; the campaign's owner
    (the host and pid on what it reserves), its tables' states (their jobs tables made) and its
    record; returns the table states."""
    # lazy: djdask.storage imports DataJoint (1 s) to register <xarray@>: after connect() did, quietly
    from djdask.storage.stores import configure_store

    configure_store(campaign.store)  # before any worker starts: they inherit it
    campaign._secrets[:] = secrets([connection])
    setup_logging(connections=[connection])
    for warning in check_legacy_jobs(connection, {cls.database for cls in campaign.selection.tables.values()}):
        logger.warning(warning)
    campaign.owner = Owner.of(connection)  # its host and pid, with the record's times, trace its reservations
    campaign.inflight.version = campaign.owner.version  # on jobs rows and, by the workers, on job metadata
    campaign._identity.update(host=campaign.owner.host, pid=campaign.owner.pid, user=campaign.owner.user)
    with dependencies_loaded_once(connection):  # a Job per table, not a graph reload per table
        tables = table_states(
            campaign.selection,
            campaign.owner,
            campaign.pools,
            target_duration=campaign.target_duration,
            max_batch=campaign.max_batch,
            timeouts=campaign.timeouts,
            groups=campaign.groups,
        )
    summary.tables = [t.summary for t in tables]
    # After the jobs tables: a user who may not create tables hears of those first.
    campaign.record = CampaignRecord.open(
        campaign.selection, campaign._identity, campaign.pools, campaign.owner, campaign._secrets
    )
    campaign.accounting.earlier = campaign.record.earlier
    return tables


def finish(
    campaign: Campaign,
    tables: list[TableState],
    summary: CampaignSummary,
    heartbeat: LeaseKeeper,
    *,
    cancelled: bool,
    t0: float,
) -> None:
    """The finish step: cancel what is left, close the pools, release the keys still
    held, publish the final state, stop the heartbeat, sum up."""
    if campaign.record is not None:
        campaign.record.stop_keeping()  # its thread talks to the pools' schedulers: before they close
    for batch in campaign.losses.drain():
        campaign.inflight.delay(batch)  # released with the rest
    campaign.inflight.shutdown(campaign.pools.close)
    # After the shutdown: released keys count as pending, none as in flight.
    campaign.publisher.report(tables, finished=True, cancelled=cancelled)
    heartbeat.stop()
    summary.seconds = time.monotonic() - t0
    summary.waiting_for_resources = [
        t.summary.table for t in tables if t.resources is not None and t.slots == 0 and t.pending
    ]
    summary.hints = order_hints(tables) + group_commit_hints(tables)
    for hint in summary.hints:
        logger.info("Hint: %s", hint)
    campaign.progress.finish(campaign.publisher.board.rows())
    unlock(tables)


def start_tracing() -> None:
    """Trace the loop's memory when asked (``djdask.campaign.trace-memory``): from here, not by
    PYTHONTRACEMALLOC, which workers would inherit; the imports and the cluster start not counted."""
    if config.get("campaign.trace-memory") and not tracemalloc.is_tracing():
        tracemalloc.start()
    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()


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
        or a :class:`~djdask.planning.planner.Selection` already made from one.
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
    campaign_id : str, optional
        Take over this ``submitted`` campaign record (``djdask submit``); default a new id.
    follow : bool, optional
        Keep the pipeline populated: look for new keys every ``djdask.campaign.follow-interval``
        (:mod:`djdask.campaign.follow`) until stopped, which is its normal end.

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
        campaign_id: str | None = None,
        follow: bool = False,
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
        self.groups = group_commits(self.selection.tables)
        self.progress = progress or TerminalProgress(enabled=False)
        self.target_duration = parse_timedelta(config.resolve("campaign.target-duration", target_duration))
        self.max_batch = int(config.get("campaign.max-batch-size"))
        self.window = int(config.get("campaign.batches-per-worker"))
        self.retry = RetryPolicy.from_config()
        self.losses = Losses(wait=parse_timedelta(config.get("campaign.worker-exit-wait")))
        self.grace = parse_timedelta(config.get("campaign.grace-period"))
        self.resize_interval = parse_timedelta(config.get("campaign.resize-interval"))
        self.pools = Pools(cluster, client, window=self.window)
        self.performance_report = performance_report
        # host, pid and user are added from the jobs tables' Owner, as `djdask status` shows them
        self._identity: dict[str, Any] = dict(
            id=campaign_id or new_id(), module=self.selection.module_name, started=time.time(), follow=bool(follow)
        )
        self._secrets: list[str] = []  # masked in everything published and logged; known at run()
        self.publisher = StatePublisher(self.pools, self._identity, self._secrets, self.progress)
        self.owner: Owner | None = None
        self.follow, self.follower = bool(follow), None  # its Follower: made in run(), on its connection
        self.pools.idle_after = float(parse_timedelta(config.get("campaign.idle-after"))) if follow else None
        self.tolerance = float(parse_timedelta(config.get("campaign.outage-tolerance")))
        self.inflight = InFlight(
            make_kwargs=self.make_kwargs,
            tolerance=float("inf") if follow else self.tolerance,  # following: as the campaign (no spent attempts)
            walltime_margin=float(config.get("campaign.walltime-margin")),
        )
        self.outage: Outage | None = None  # the campaign's connection's, made in run()
        self.accounting = Accounting()
        self.publisher.accounting = self.accounting
        self.record: CampaignRecord | None = None  # its row in ~djdask_campaign, made in run()
        self.completion = Completion(
            self.inflight,
            self.losses,
            self.retry,
            self.publisher,
            self._secrets,
            priority=self.priority,
            max_lost=int(config.get("campaign.max-lost")),
            db=self._db,
            accounting=self.accounting,
        )
        self._stop = threading.Event()
        self.handing_over = False

    def request_stop(self) -> None:
        """Ask the running campaign to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    def hand_over(self) -> None:
        """Stop as :meth:`request_stop` does, for a successor controller to go on (``--resubmit``):
        the record stays open (``submitted``) and no end is notified."""
        self.handing_over = True
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop ----------------------------------------------------------------
    def run(self) -> CampaignSummary:
        """Run the campaign until every reachable key is done or it is stopped."""
        t0 = time.monotonic()
        summary = CampaignSummary(following=self.follow)
        if not len(self.selection.graph):
            return summary
        connection = self.selection.connection
        # Before anything is written: as many workers as the server has connections for.
        for pool_name, cap in capacity.check(connection, self.pools, self.workers).items():
            self.pools.pools[pool_name].cap = cap
        tables = open_step(self, connection, summary)
        reserved = [t for t in tables if t.queue.reserved]
        self.outage = Outage(
            connection,
            tolerance=float("inf") if self.follow else self.tolerance,
            say_after=self.tolerance if self.follow else None,  # following: no limit; said past the tolerance
            on_long=partial(long_outage, self._identity, self._secrets),
            stopping=self._stop.is_set,
            on_change=lambda notice: self.publisher.notify(tables, notice),
            on_return=lambda: self._after_outage(reserved),
        )
        try:
            # Keys left reserved by campaigns or workers that died go back to pending
            # now, without waiting for any timeout.
            recover_orphans(connection, [t.queue.name for t in reserved], lease_timeout=lease_timeout())
            if self.follow:  # its marks before the first sweep: a change after it is seen at the first look
                self.follower = Follower.start(connection, self.selection.graph)
                self.publisher.following = self.follower.state
            sweep(tables, self.priority, first=True)
            heartbeat = LeaseKeeper(connection, self.owner, idle=self.follower and self.follower.is_idle)
            for state in reserved:
                heartbeat.watch(state.queue.name)
            self.pools.start(
                self.workers,
                DashboardPlugin(),
                PipelinePlugin(self.selection.module_name),
                lambda text: redact(text, self._secrets),
                self.losses,
            )
            for pool in self.pools:
                self.outage.subscribe(pool.client)
        except BaseException as err:
            self.pools.close()
            unlock(tables)  # the unreserved tables' locks, taken by the sweep
            self.record.close(*ending(summary, err), self._account(summary, t0))
            raise
        default = self.pools.default
        summary.dashboard_link = default.links.recorded
        remote = default.profile is not None and default.profile.kind.name != "local"
        self.progress.started(
            default.links, default.client.scheduler.address if remote else None, campaign=self._identity["id"]
        )
        heartbeat.start()
        self.record.keep(
            default.links.recorded,
            lambda: self._account(summary, t0),
            self.request_stop,
            self._secrets,
            self.publisher.publish_history,
            idle=self.follower and self.follower.is_idle,
        )
        start_tracing()
        failed = True
        try:
            with performance_report(self.pools.default.client, self.performance_report, self._secrets):
                self._loop(tables, summary, t0)
                failed = False
            if tracemalloc.is_tracing():
                summary.traced_peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            finish(self, tables, summary, heartbeat, cancelled=summary.cancelled or failed, t0=t0)
            state, code = ending(summary, sys.exc_info()[1], self.handing_over)
            self.record.close(state, code, self._account(summary, t0))
            if state != "submitted":
                campaign_ended(self._identity, summary, state, self._secrets)
        return summary

    def _account(self, summary: CampaignSummary, t0: float) -> dict[str, Any]:
        account = self.accounting.snapshot(summary.tables, self.pools, time.monotonic() - t0)
        return account if self.follower is None else {**account, "following": self.follower.state()}

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
                self.pools.stop_starting()
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
                if stop_deadline is not None or (self.max_calls is not None and self.calls >= self.max_calls):
                    return
                due = inflight.next_due()
                if due is not None:
                    time.sleep(max(0.0, due - time.monotonic()))
                    continue
                if inflight.delayed and inflight.stop_waiting():  # nothing runs that they could wait for
                    continue
                if self.follower is not None:  # following: look below what changed, or wait
                    self.publisher.report(tables)
                    self.follower.wait_for_work(tables, self.priority, self._db, swept, self._stop)
                    swept = True
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
        """Run a database step of the loop, waiting out an outage (:mod:`djdask.db.outage`)."""
        return fn() if self.outage is None else self.outage.call(fn)

    def _after_outage(self, reserved: list[TableState]) -> None:
        """The database is back: re-stamp the reservations, give back keys no batch carries."""
        held = self.inflight.held_keys(also=self.losses.batches())
        for state, freed in restamp(self.selection.connection, self.owner, reserved, held):
            state.pending += freed

    def _dispatch(self, deepest_first: list[TableState]) -> bool:
        """The claim and dispatch steps (:func:`djdask.campaign.inflight.claim_and_submit`)."""
        budget = None if self.max_calls is None else self.max_calls - self.calls
        claimed = claim_and_submit(deepest_first, self.inflight, budget, self._db, priority=self.priority)
        self.calls += claimed
        if claimed and self.follower is not None:
            self.follower.idle_since = None
        return claimed > 0
