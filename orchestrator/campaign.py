"""The streaming campaign: claim, dispatch, complete, stream down the DAG.

Every table runs at once.  As soon as keys of a table succeed, the keys of its
child tables that they make ready are enqueued, claimed and dispatched: no
table waits for its parent table to finish.  Deeper tables get free worker
slots first and higher Dask priorities, so finished results appear early.

Each Dask task carries a batch of keys of one table, sized toward a target
task duration from the durations workers report (:mod:`orchestrator.batching`).
A bounded window of tasks per worker is in flight; the campaign holds nothing
else, so its memory does not grow with the number of missing keys.

A campaign may run on several pools of workers at once (``cluster={"default":
"slurm", "gpu": "gpu-profile"}``): each table goes to the pool that
``djdask.campaign.pools`` names for it, else to a pool whose profile offers the
resources the table declares, else to ``default``.  Each pool that scales is
told how many worker processes its tables' pending and running keys could use.

Transient failures (a lost worker, a lost database connection, a timeout) are
retried with exponential backoff; a ``make()`` that raises anything else is an
error row at once.  :meth:`Campaign.request_stop` (Ctrl-C, SIGTERM) stops
claiming, cancels queued tasks and releases their keys, waits a grace period
for running ones, and returns a summary; running the campaign again resumes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import tracemalloc
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dask.utils import parse_timedelta

from . import config
from .batching import BatchSizer
from .dashboard import DashboardPlugin, page_link
from .database import redact, redact_logs, secrets
from .errors import DjdaskError, ProfileError
from .executor import PipelinePlugin, run_batch
from .jobs import ERROR_MESSAGE_LENGTH, JobQueue, Owner, check_legacy_jobs, check_make_kwargs, check_priority
from .leases import Heartbeat, recover_orphans
from .planner import Selection, select
from .progress import METADATA_KEY, CampaignBoard, TerminalProgress
from .unreserved import UnreservedQueue, has_jobs_table

__all__ = ["Campaign", "CampaignSummary", "TableSummary"]

logger = logging.getLogger(__name__)

#: Characters of one traceback line in the published state (the page shows the last lines).
TRACEBACK_LINE_LENGTH = 300


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
class _Table:
    """A table's state while the campaign runs."""

    info: Any
    queue: JobQueue | UnreservedQueue
    sizer: BatchSizer
    summary: TableSummary
    resources: dict[str, float] | None
    children: list["_Table"] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)  # class names, within the campaign
    rows_before: int = 0  # rows in the table when the campaign started
    pending: int = 0  # estimate: claimable keys in the jobs table
    tasks: int = 0  # tasks in flight
    keys: int = 0  # keys in flight
    slots: int = 0  # most tasks in flight at once (eligible workers x window)
    started: float | None = None
    pool: "_Pool | None" = None


@dataclass
class _Pool:
    """A pool of workers: a profile's cluster (or the LocalCluster, or a given client)."""

    name: str
    profile: Any = None  # clusters.Profile, or None for the LocalCluster / a given client
    client: Any = None
    cluster: Any = None  # None when the workers are not the campaign's to stop
    demand: Any = None  # clusters.scaling.Demand
    capacity: int = 0  # tasks in flight at most: workers x window
    tasks: int = 0  # tasks in flight
    link: str | None = None
    publishing: bool = False  # a state sent to its scheduler, not yet answered


@dataclass
class _Batch:
    table: _Table
    keys: list[dict]
    attempt: int = 1
    ready: float = 0.0  # monotonic time before which a retry waits


def _covers(offered: dict | None, needed: dict[str, float]) -> bool:
    """Whether resources ``offered`` (by a worker, or a profile's workers) meet ``needed``."""
    offered = offered or {}
    return all(float(offered.get(r, 0)) >= float(n) for r, n in needed.items())


def _offers(pool: _Pool, resources: dict[str, float]) -> bool:
    """Whether the workers of a pool's profile offer ``resources``."""
    return _covers(pool.profile.raw.get("resources") if pool.profile is not None else None, resources)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().endswith(":")]
    return " / ".join(lines[-n:])


def _executing(dask_worker) -> list[str]:
    """Keys of the tasks a worker is executing right now (run on each worker)."""
    return [str(ts.key) for ts in dask_worker.state.executing]


def _resources_of(cls: type) -> dict[str, float] | None:
    configured = config.get("campaign.resources") or {}
    declared = configured.get(cls.__name__) or getattr(cls, "djdask_resources", None)
    return dict(declared) if declared else None


class Campaign:
    """Populate a pipeline's auto-populated tables on Dask workers.

    Parameters
    ----------
    pipeline : str or Selection
        The importable pipeline module (``"pipeline"``, ``"mylab.pipeline"``),
        or a :class:`~orchestrator.planner.Selection` already made from one.
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
        self.priority = check_priority(priority, "priority")
        self.make_kwargs = check_make_kwargs(make_kwargs)
        self.store = store
        self.selection = pipeline if isinstance(pipeline, Selection) else select(pipeline, targets, restrictions)
        self.workers = workers
        self.client = client
        self.progress = progress or TerminalProgress(enabled=False)
        self.target_duration = parse_timedelta(config.get("campaign.target-duration", target_duration))
        self.max_batch = int(config.get("campaign.max-batch-size"))
        self.window = int(config.get("campaign.batches-per-worker"))
        self.max_attempts = int(config.get("campaign.max-attempts"))
        self.backoff = parse_timedelta(config.get("campaign.retry-backoff"))
        self.grace = parse_timedelta(config.get("campaign.grace-period"))
        self.max_calls = max_calls
        self.pools = self._pools(cluster, client)
        self.dashboard_link: str | None = None
        self.page_link: str | None = None  # the campaign page of the dashboard
        self.performance_report = performance_report
        self.board = CampaignBoard()  # what the terminal shows; the page has its own
        self.publish_interval = parse_timedelta(config.get("campaign.publish-interval"))
        # host, pid and user are added from the jobs tables' Owner, as `djdask status` shows them
        self._identity: dict[str, Any] = {"id": uuid.uuid4().hex, "module": self.selection.module_name,
                                          "started": time.time()}
        self._latest_errors: deque[dict[str, Any]] = deque(maxlen=20)
        self._secrets = secrets()  # masked in everything published and logged
        redact_logs()
        self._boarded = self._published = 0.0
        self._stop = threading.Event()
        self._done: queue.Queue = queue.Queue()  # futures as they finish, from any pool's client

    def request_stop(self) -> None:
        """Ask the running campaign to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    # -- set-up ----------------------------------------------------------------
    @staticmethod
    def _pools(cluster: str | Mapping[str, str] | None, client: Any) -> dict[str, _Pool]:
        if client is not None or not cluster:
            return {"default": _Pool("default")}
        from clusters import resolve  # clusters imports orchestrator: import late

        named = {"default": cluster} if isinstance(cluster, str) else dict(cluster)
        if "default" not in named:
            raise DjdaskError(
                f"Pools {', '.join(sorted(named))} have no `default` pool for the tables no other pool takes. "
                "Add one: --cluster default=PROFILE."
            )
        return {name: _Pool(name, resolve(profile)) for name, profile in named.items()}

    def _route(self, state: _Table) -> _Pool:
        """The pool a table's keys run on: configured, else by resources, else default."""
        configured = (config.get("campaign.pools") or {}).get(state.info.class_name)
        if configured is not None:
            if configured not in self.pools:
                raise DjdaskError(
                    f"`djdask.campaign.pools.{state.info.class_name}` names pool {configured!r}, which this "
                    f"campaign does not have (pools: {', '.join(sorted(self.pools))}). Add it with "
                    f"--cluster {configured}=PROFILE or change the setting."
                )
            return self.pools[configured]
        if state.resources:
            for pool in self.pools.values():
                if pool.name != "default" and _offers(pool, state.resources):
                    return pool
        return self.pools["default"]
    def _tables(self) -> list[_Table]:
        """One state per table, DataJoint creating missing jobs tables on the way."""
        classes = self.selection.tables
        graph = self.selection.graph
        if not len(graph):
            return []
        connection = classes[graph.order[0]]().connection
        for warning in check_legacy_jobs(connection, {cls.database for cls in classes.values()}):
            logger.warning(warning)
        owner = Owner.of(connection)
        self._identity.update(host=owner.host, pid=owner.pid, user=owner.user)
        self.owner = owner
        self.version = owner.version  # stamped on jobs rows and, by the workers, on the rows' job metadata
        states = {}
        for info in graph:
            cls = classes[info.full_name]
            table = cls()
            if has_jobs_table(table):
                jobs_queue: JobQueue | UnreservedQueue = JobQueue(table, self.selection.restriction, owner)
            else:
                logger.info("%s has no jobs table (no primary-key attribute comes from a foreign key): "
                            "it runs unreserved, as DataJoint's populate() runs it.", info.class_name)
                jobs_queue = UnreservedQueue(table, self.selection.restriction)
            states[info.full_name] = _Table(
                info=info,
                queue=jobs_queue,
                sizer=BatchSizer(self.target_duration, self.max_batch),
                summary=TableSummary(info.class_name),
                resources=_resources_of(cls),
            )
        for name, state in states.items():
            state.children = [states[c] for c in graph.dag.successors(name) if c in states]
            state.parents = [states[p].summary.table for p in graph.dag.predecessors(name) if p in states]
            state.pool = self._route(state)
            state.rows_before = len(classes[name]())
        return list(states.values())

    def _start_pools(self) -> None:
        """Start each pool's workers (or reach its scheduler) and register the pipeline."""
        from distributed import Client

        from clusters import local_cluster
        from clusters.scaling import Demand

        for pool in self.pools.values():
            if pool.profile is not None:
                pool.demand = Demand()
                pool.client, pool.cluster = pool.profile.start(self.workers, pool.demand)
            elif self.client is not None:
                pool.client = self.client
            else:
                pool.cluster = local_cluster(self.workers)
                pool.client = Client(pool.cluster)
            pool.client.register_plugin(PipelinePlugin(self.selection.module_name), name=PipelinePlugin.name)
            try:
                pool.client.register_plugin(DashboardPlugin(), name=DashboardPlugin.name)
            except Exception as err:  # the campaign runs without its page
                logger.warning(
                    "Pool %s: the campaign page could not be added to the Dask dashboard (%s). Install djdask "
                    "where the scheduler runs to have it.", pool.name, redact(str(err), self._secrets),
                )
            pool.link = pool.client.dashboard_link
        self.dashboard_link = self.pools["default"].link
        self.page_link = page_link(self.dashboard_link)
        for pool in self.pools.values():
            if pool.name != "default":
                logger.info("Pool %s (%s): dashboard %s", pool.name, pool.profile.name, pool.link)

    def _size_pools(self, tables: list[_Table]) -> None:
        """Task slots per pool and per table from the workers now present."""
        present = {}
        for pool in self.pools.values():
            present[pool.name] = list(pool.client.scheduler_info(n_workers=-1)["workers"].values())
            pool.capacity = max(1, len(present[pool.name])) * self.window
            self._check_submissions(pool, bool(present[pool.name]))
        for state in tables:
            workers = present[state.pool.name]
            if state.resources is None:
                state.slots = state.pool.capacity
            else:
                eligible = sum(1 for w in workers if _covers(w.get("resources"), state.resources))
                if not eligible and _offers(state.pool, state.resources) and state.pool.demand is not None:
                    eligible = 1  # the pool's jobs will offer them: keys wait there, and ask for jobs
                state.slots = eligible * self.window

    @staticmethod
    def _check_submissions(pool: _Pool, has_workers: bool) -> None:
        """Stop when a pool's batch system refuses its jobs and none was ever taken: the
        profile is wrong (queue, account, memory), and waiting would never end."""
        demand = pool.demand
        if demand is None or not demand.submit_errors:
            return
        if demand.submitted or has_workers:
            if len(demand.submit_errors) == 1 or len(demand.submit_errors) % 20 == 0:
                logger.warning("Pool %s: a job submission was refused: %s", pool.name, demand.submit_errors[-1])
            return
        name = pool.profile.name
        raise ProfileError(
            f"Profile {name!r} could not submit a worker job: {_last_lines(demand.submit_errors[-1])}. "
            f"Fix its settings (queue, account, cores, memory, walltime) in `djdask.clusters.{name}`; "
            f"`djdask clusters script {name}` prints the job script it submits."
        )

    def _update_demand(self, tables: list[_Table]) -> None:
        """Tell scaling pools how many worker processes their keys could use now."""
        for pool in self.pools.values():
            if pool.demand is not None:
                pool.demand.workers = sum(t.pending + t.keys for t in tables if t.pool is pool)

    # -- the loop ----------------------------------------------------------------
    def run(self) -> CampaignSummary:
        """Run the campaign until every reachable key is done or it is stopped."""
        from .database import configure_store

        t0 = time.monotonic()
        summary = CampaignSummary()
        configure_store(self.store)  # before any worker starts: they inherit it
        tables = self._tables()
        if not tables:
            return summary
        summary.tables = [t.summary for t in tables]
        connection = tables[0].queue.connection
        reserved = [t for t in tables if t.queue.reserved]
        # Keys left reserved by campaigns or workers that died go back to pending
        # now, without waiting for any timeout.
        recover_orphans(connection, [t.queue.name for t in reserved])
        self._sweep(tables)
        heartbeat = Heartbeat(connection, self.owner)
        for state in reserved:
            heartbeat.watch(state.queue.name)
        try:
            self._start_pools()
        except BaseException:
            self._close_pools()
            raise
        summary.dashboard_link = self.dashboard_link
        self.progress.started(self.dashboard_link, self.page_link)
        futures: dict[Any, _Batch] = {}
        delayed: list[_Batch] = []
        heartbeat.start()
        if config.get("campaign.trace-memory") and not tracemalloc.is_tracing():
            tracemalloc.start()  # here, not by PYTHONTRACEMALLOC, which workers would inherit
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()  # measure the loop, not the imports and the cluster start
        failed = True
        try:
            with self._performance_report():
                self._loop(tables, futures, delayed, summary, t0)
                failed = False
            if tracemalloc.is_tracing():
                summary.traced_peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            self._shutdown(futures, delayed)
            # After the shutdown: released keys count as pending, none as in flight.
            self._report(tables, finished=True, cancelled=summary.cancelled or failed)
            heartbeat.stop()
            summary.seconds = time.monotonic() - t0
            summary.waiting_for_resources = [
                t.summary.table for t in tables if t.resources is not None and t.slots == 0 and t.pending
            ]
            self.progress.finish(self.board.rows())
            for state in tables:
                if not state.queue.reserved:
                    state.queue.unlock()
        return summary

    @contextlib.contextmanager
    def _performance_report(self) -> Iterator[None]:
        """Dask's performance report of the default pool, when one was asked for.

        Writing it (at the end) may fail, say in a directory that does not exist:
        that is a warning, and neither the campaign's outcome nor an error that
        ended it is replaced by it.
        """
        if not self.performance_report:
            yield
            return
        from distributed import performance_report

        stack = contextlib.ExitStack()
        stack.enter_context(self.pools["default"].client.as_current())
        stack.enter_context(performance_report(filename=str(self.performance_report)))
        try:
            yield
        finally:
            try:
                stack.close()
            except Exception as err:
                logger.warning("The performance report %s could not be written: %s: %s", self.performance_report,
                               type(err).__name__, redact(str(err), self._secrets))

    def _loop(self, tables, futures, delayed, summary, t0) -> None:
        deepest_first = sorted(tables, key=lambda t: -t.info.depth)
        calls = 0
        self._size_pools(tables)
        sized_at = time.monotonic()
        warned: set[str] = set()
        stop_deadline: float | None = None
        swept = False  # a sweep found keys, but none has been claimed since
        while True:
            now = time.monotonic()
            if stop_deadline is None and self._stop.is_set():
                stop_deadline = now + self.grace
                summary.cancelled = True
                self._cancel_queued(futures, delayed)
            if stop_deadline is None:
                if now - sized_at > 2:
                    self._size_pools(tables)
                    sized_at = now
                for batch in [b for b in delayed if b.ready <= now and b.table.pool.tasks < b.table.pool.capacity]:
                    delayed.remove(batch)
                    self._submit(batch, futures)
                for state in deepest_first:
                    if state.slots == 0 and state.pending and state.summary.table not in warned:
                        warned.add(state.summary.table)
                        logger.warning(
                            "No worker offers the resources %s that %s needs; its keys stay pending.",
                            state.resources, state.summary.table,
                        )
                    pool = state.pool
                    while (pool.tasks < pool.capacity and state.tasks < state.slots and state.pending > 0
                           and (self.max_calls is None or calls < self.max_calls)):
                        free = min(pool.capacity - pool.tasks, state.slots - state.tasks)
                        n = state.sizer.size(pending=state.pending, slots=free)
                        if self.max_calls is not None:
                            n = min(n, self.max_calls - calls)
                        keys = state.queue.claim(n, max_priority=self.priority)
                        if not keys:
                            state.pending = 0
                            break
                        state.pending = max(0, state.pending - len(keys))
                        calls += len(keys)
                        swept = False
                        self._submit(_Batch(state, keys), futures)
                self._update_demand(tables)
            if not futures:
                if stop_deadline is not None or (self.max_calls is not None and calls >= self.max_calls):
                    return
                if delayed:
                    time.sleep(max(0.0, min(b.ready for b in delayed) - time.monotonic()))
                    continue
                # Idle: look once more for keys that other workers made ready. If
                # that finds none we can claim (priority, restriction), we are done.
                if swept or not self._sweep(tables):
                    return
                swept = True
                continue
            if stop_deadline is not None and now > stop_deadline:
                logger.warning("Grace period over: %d task(s) still running are stopped.", len(futures))
                return
            for future in self._wait_done(timeout=0.5):
                if future in futures:  # not one cancelled and forgotten while stopping
                    self._finished(future, futures.pop(future), delayed, t0)
            self._report(tables)

    def _wait_done(self, timeout: float) -> list:
        """Futures finished since the last call, waiting up to ``timeout`` for the first."""
        try:
            done = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def _sweep(self, tables: list[_Table]) -> bool:
        """Enqueue every table in full: at the start, and when idle (keys that other
        workers made ready); True when something is claimable."""
        found = False
        for state in tables:
            state.summary.enqueued += state.queue.enqueue(self.priority)
            state.pending = state.queue.counts()["pending"]
            found = found or (state.pending > 0 and state.slots > 0)
        return found

    def _submit(self, batch: _Batch, futures: dict) -> None:
        state = batch.table
        if state.started is None:
            state.started = time.monotonic()
        extra = {"resources": state.resources} if state.resources else {}
        future = state.pool.client.submit(
            run_batch, state.info.full_name, batch.keys, self.make_kwargs, self.version,
            pure=False, priority=state.info.depth, **extra
        )
        futures[future] = batch
        future.add_done_callback(self._done.put)
        state.pool.tasks += 1
        state.tasks += 1
        state.keys += len(batch.keys)
        state.summary.tasks += 1
        state.summary.largest_batch = max(state.summary.largest_batch, len(batch.keys))

    @staticmethod
    def _landed(batch: _Batch) -> None:
        """A submitted batch is no longer in flight (finished, cancelled or abandoned):
        undo what :meth:`_submit` counted."""
        state = batch.table
        state.pool.tasks -= 1
        state.tasks -= 1
        state.keys -= len(batch.keys)

    @staticmethod
    def _release(batch: _Batch) -> None:
        """Give a batch's keys back to the queue: pending again, for this campaign's next
        claim or another worker's."""
        batch.table.queue.release(batch.keys)
        batch.table.pending += len(batch.keys)

    def _finished(self, future, batch: _Batch, delayed: list[_Batch], t0: float) -> None:
        state = batch.table
        self._landed(batch)
        if future.status == "finished":
            outcomes = future.result()
        else:  # the task failed as a whole: its worker died, or it was lost
            try:
                reason = f"{type(future.exception()).__name__}: {future.exception()}"
            except Exception as err:  # a cancelled future has no exception to fetch
                reason = f"{type(err).__name__}: {err}"
            outcomes = [{"key": k, "status": "transient", "duration": 0.0, "error_message": reason,
                         "error_stack": None} for k in batch.keys]
        done, failed, transient, requeue = [], [], [], []
        for outcome in outcomes:
            status = outcome["status"]
            if status in ("success", "skipped"):
                done.append(outcome)
            elif status == "requeue":  # not started: its worker is retiring
                requeue.append(outcome["key"])
            elif status == "error":
                failed.append((outcome["key"], outcome["error_message"], outcome["error_stack"]))
                logger.error("%s %s: %s", state.summary.table, outcome["key"],
                             redact(outcome["error_message"] or "", self._secrets))
            else:
                transient.append(outcome)
        state.queue.complete((o["key"], o["duration"]) for o in done)
        state.sizer.observe([o["duration"] for o in done if o["status"] == "success"])
        state.summary.succeeded += sum(1 for o in done if o["status"] == "success")
        state.summary.skipped += sum(1 for o in done if o["status"] == "skipped")
        if transient:
            reason = transient[-1]["error_message"]
            if batch.attempt < self.max_attempts:
                wait_s = self.backoff * 2 ** (batch.attempt - 1)
                logger.warning(
                    "%s: %d key(s) failed transiently (%s); retry %d/%d in %.1f s",
                    state.summary.table, len(transient), reason, batch.attempt + 1, self.max_attempts, wait_s,
                )
                state.summary.retries += len(transient)
                delayed.append(_Batch(state, [o["key"] for o in transient], batch.attempt + 1,
                                      time.monotonic() + wait_s))
            else:
                failed.extend(
                    (o["key"], f"{o['error_message']} (after {batch.attempt} attempts)", o["error_stack"])
                    for o in transient
                )
                logger.error("%s: %d key(s) failed %d times: %s", state.summary.table, len(transient),
                             batch.attempt, reason)
        if requeue:
            delayed.append(_Batch(state, requeue, batch.attempt, time.monotonic()))
        state.queue.fail(failed)
        state.summary.errors += len(failed)
        for key, message, stack in failed[-self._latest_errors.maxlen:]:
            self._latest_errors.append({
                "table": state.summary.table, "key": ", ".join(f"{k}={v}" for k, v in key.items()),
                "message": redact(message or "", self._secrets)[:ERROR_MESSAGE_LENGTH], "time": time.time(),
                "traceback": redact("\n".join(line[:TRACEBACK_LINE_LENGTH]
                                              for line in (stack or "").rstrip().splitlines()[-10:]), self._secrets),
            })
        if done or failed:
            elapsed = time.monotonic() - t0
            state.summary.first_done = state.summary.first_done if state.summary.first_done is not None else elapsed
            state.summary.last_done = elapsed
            state.summary.seconds = time.monotonic() - (state.started or t0)
        made = [o["key"] for o in done]
        if made:
            for child in state.children:
                added = child.queue.enqueue(self.priority, among=made)
                child.summary.enqueued += added
                child.pending += added

    # -- stopping ----------------------------------------------------------------
    def _cancel_queued(self, futures: dict, delayed: list[_Batch]) -> None:
        """Cancel tasks no worker has started and release their keys; keep running ones."""
        executing = set()
        for pool in self.pools.values():
            try:
                executing |= {k for keys in pool.client.run(_executing).values() for k in keys}
            except Exception as err:  # workers gone: nothing is running
                logger.debug("Could not ask the workers of pool %s what they run: %s", pool.name, err)
        queued = [f for f in futures if str(f.key) not in executing]
        for future in queued:
            future.cancel()
            batch = futures.pop(future)
            self._landed(batch)
            self._release(batch)
        for batch in delayed:
            self._release(batch)
        delayed.clear()
        logger.warning(
            "Stopping: %d queued task(s) cancelled and their keys released; waiting up to %.0f s for %d running.",
            len(queued), self.grace, len(futures),
        )

    def _close_pools(self) -> None:
        # Closing a cluster kills its workers, which rolls back any make() still
        # in its transaction (no partial rows), and cancels its batch jobs.
        for pool in self.pools.values():
            if pool.cluster is None:
                continue
            for closable in (pool.client, pool.cluster):
                try:
                    if closable is not None:
                        closable.close()
                except Exception as err:  # keep closing the others
                    logger.error("Could not close pool %s: %s", pool.name, err)

    def _shutdown(self, futures: dict, delayed: list[_Batch]) -> None:
        for future in futures:
            future.cancel()
        self._close_pools()
        for batch in futures.values():
            self._landed(batch)
        for batch in [*futures.values(), *delayed]:
            try:
                self._release(batch)
            except Exception as err:  # keep the error that stopped the campaign
                logger.error("Could not release %d keys of %s: %s", len(batch.keys), batch.table.summary.table, err)
        futures.clear()
        delayed.clear()

    # -- progress ------------------------------------------------------------------
    def _state(self, tables: list[_Table], finished: bool = False, cancelled: bool = False) -> dict[str, Any]:
        """What the campaign publishes: see :class:`~orchestrator.progress.CampaignBoard`."""
        now = time.monotonic()
        return {
            "version": 1,
            "time": time.time(),
            "campaign": {**self._identity, "finished": finished, "cancelled": cancelled},
            "tables": [
                {
                    "table": t.summary.table, "full_name": t.info.full_name, "depth": t.info.depth,
                    "parents": t.parents, "pool": t.pool.name if t.pool else None,
                    "rows": t.rows_before + t.summary.succeeded, "made": t.summary.succeeded + t.summary.skipped,
                    "errors": t.summary.errors, "in_flight": t.keys, "pending": t.pending,
                    # A table with nothing left: its span ends at its last key, so that
                    # its average rate is not diluted by the rest of the campaign.
                    "seconds": (t.summary.seconds if t.summary.last_done is not None and not (t.pending or t.keys)
                                else now - t.started if t.started else 0.0),
                }
                for t in tables
            ],
            "errors": list(self._latest_errors),
        }

    def _report(self, tables: list[_Table], finished: bool = False, cancelled: bool = False) -> None:
        """Progress to the terminal and, every publish-interval, the state to the schedulers."""
        now = time.monotonic()
        if not finished and now - self._boarded < 0.25:
            return
        self._boarded = now
        state = self._state(tables, finished, cancelled)
        self.board.update(state)
        if not finished:
            self.progress.update(self.board.rows())
        if finished or now - self._published >= self.publish_interval:
            self._published = now
            for pool in self.pools.values():
                self._publish(pool, state, wait=finished)

    def _publish(self, pool: _Pool, state: dict[str, Any], *, wait: bool) -> None:
        """Send the state to a pool's scheduler for its campaign page.

        The loop does not wait for the answer (a scheduler that is gone or far
        away would hold up claiming and completing for the connect timeout);
        while one publish is unanswered, newer states are not sent.  The final
        state is sent and waited for, a few seconds at most.
        """
        client = pool.client
        if client is None or client.status != "running":
            return
        if wait:
            try:
                client.sync(client.scheduler.set_metadata, keys=[METADATA_KEY], value=state, callback_timeout=5)
            except Exception as err:  # the page misses the last state; the campaign's outcome stands
                logger.debug("Could not publish the final campaign state to pool %s: %s", pool.name, err)
            return
        if pool.publishing:
            return
        pool.publishing = True

        async def send() -> None:
            try:
                await client.scheduler.set_metadata(keys=[METADATA_KEY], value=state)
            except Exception as err:  # the page misses an update; the campaign goes on
                logger.debug("Could not publish the campaign state to pool %s: %s", pool.name, err)
            finally:
                pool.publishing = False

        client.loop.add_callback(send)

