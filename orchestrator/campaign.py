"""The streaming campaign: claim, dispatch, complete, stream down the DAG.

Every table runs at once.  As soon as keys of a table succeed, the keys of its
child tables that they make ready are enqueued, claimed and dispatched: no
table waits for its parent table to finish.  Deeper tables get free worker
slots first and higher Dask priorities, so finished results appear early.

Each Dask task carries a batch of keys of one table, sized toward a target
task duration from the durations workers report (:mod:`orchestrator.batching`).
A bounded window of tasks per worker is in flight; the campaign holds nothing
else, so its memory does not grow with the number of missing keys.

Transient failures (a lost worker, a lost database connection, a timeout) are
retried with exponential backoff; a ``make()`` that raises anything else is an
error row at once.  :meth:`Campaign.request_stop` (Ctrl-C, SIGTERM) stops
claiming, cancels queued tasks and releases their keys, waits a grace period
for running ones, and returns a summary; running the campaign again resumes.
"""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dask.utils import parse_timedelta

from . import config
from .batching import BatchSizer
from .executor import PipelinePlugin, run_batch
from .jobs import JobQueue, Owner, check_legacy_jobs
from .leases import Heartbeat, recover_orphans
from .planner import Selection, select
from .progress import TerminalProgress

__all__ = ["Campaign", "CampaignSummary", "TableSummary"]

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
    traced_peak_bytes: int | None = None  # when tracemalloc traces (PYTHONTRACEMALLOC=1)

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
    queue: JobQueue
    sizer: BatchSizer
    summary: TableSummary
    resources: dict[str, float] | None
    children: list["_Table"] = field(default_factory=list)
    pending: int = 0  # estimate: claimable keys in the jobs table
    tasks: int = 0  # tasks in flight
    keys: int = 0  # keys in flight
    slots: int = 0  # most tasks in flight at once (eligible workers x window)
    started: float | None = None


@dataclass
class _Batch:
    table: _Table
    keys: list[dict]
    attempt: int = 1
    ready: float = 0.0  # monotonic time before which a retry waits


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
    cluster : str, optional
        A cluster profile (``djdask clusters list``); default a LocalCluster.
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
        cluster: str | None = None,
    ) -> None:
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
        self.priority = priority
        self.profile = None
        if cluster:
            from clusters import resolve  # clusters imports orchestrator: import late

            self.profile = resolve(cluster)
        self.dashboard_link: str | None = None
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Ask the running campaign to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    # -- set-up ----------------------------------------------------------------
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
        states = {}
        for info in graph:
            cls = classes[info.full_name]
            states[info.full_name] = _Table(
                info=info,
                queue=JobQueue(cls(), self.selection.restriction, owner),
                sizer=BatchSizer(self.target_duration, self.max_batch),
                summary=TableSummary(info.class_name),
                resources=_resources_of(cls),
            )
        for name, state in states.items():
            state.children = [states[c] for c in graph.dag.successors(name) if c in states]
        return list(states.values())

    def _start_cluster(self):
        from distributed import Client

        from clusters import local_cluster

        cluster = None
        client = self.client
        if client is None and self.profile is not None:
            client, cluster = self.profile.start(self.workers)
        elif client is None:
            cluster = local_cluster(self.workers)
            client = Client(cluster)
        client.register_plugin(PipelinePlugin(self.selection.module_name), name=PipelinePlugin.name)
        self.dashboard_link = client.dashboard_link
        return client, cluster

    def _size_pools(self, client, tables: list[_Table]) -> int:
        """Task slots per table from the workers now present; return the total."""
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        total = max(1, len(workers)) * self.window
        for state in tables:
            if state.resources is None:
                state.slots = total
            else:
                eligible = sum(
                    1 for w in workers
                    if all(w.get("resources", {}).get(r, 0) >= need for r, need in state.resources.items())
                )
                state.slots = eligible * self.window
        return total

    # -- the loop ----------------------------------------------------------------
    def run(self) -> CampaignSummary:
        """Run the campaign until every reachable key is done or it is stopped."""
        t0 = time.monotonic()
        summary = CampaignSummary()
        tables = self._tables()
        if not tables:
            return summary
        summary.tables = [t.summary for t in tables]
        connection = tables[0].queue.connection
        # Keys left reserved by campaigns or workers that died go back to pending
        # now, without waiting for any timeout.
        recover_orphans(connection, [t.queue.name for t in tables])
        self._sweep(tables)
        heartbeat = Heartbeat(connection, tables[0].queue.owner)
        for state in tables:
            heartbeat.watch(state.queue.name)
        client, cluster = self._start_cluster()
        summary.dashboard_link = self.dashboard_link
        self.progress.started(self.dashboard_link)
        futures: dict[Any, _Batch] = {}
        delayed: list[_Batch] = []
        heartbeat.start()
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()  # measure the loop, not the imports and the cluster start
        try:
            self._loop(client, tables, futures, delayed, summary, t0)
            if tracemalloc.is_tracing():
                summary.traced_peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            self._shutdown(client, cluster, futures, delayed)
            heartbeat.stop()
            summary.seconds = time.monotonic() - t0
            summary.waiting_for_resources = [
                t.summary.table for t in tables if t.resources is not None and t.slots == 0 and t.pending
            ]
            self.progress.finish(self._rows(tables, t0))
        return summary

    def _loop(self, client, tables, futures, delayed, summary, t0) -> None:
        from distributed import wait

        deepest_first = sorted(tables, key=lambda t: -t.info.depth)
        calls = 0
        capacity = self._size_pools(client, tables)
        sized_at = time.monotonic()
        warned: set[str] = set()
        stop_deadline: float | None = None
        swept = False  # a sweep found keys, but none has been claimed since
        while True:
            now = time.monotonic()
            if stop_deadline is None and self._stop.is_set():
                stop_deadline = now + self.grace
                summary.cancelled = True
                self._cancel_queued(client, futures, delayed)
            if stop_deadline is None:
                if now - sized_at > 5:
                    capacity, sized_at = self._size_pools(client, tables), now
                for batch in [b for b in delayed if b.ready <= now and len(futures) < capacity]:
                    delayed.remove(batch)
                    self._submit(client, batch, futures)
                for state in deepest_first:
                    if state.slots == 0 and state.pending and state.summary.table not in warned:
                        warned.add(state.summary.table)
                        logger.warning(
                            "No worker offers the resources %s that %s needs; its keys stay pending.",
                            state.resources, state.summary.table,
                        )
                    while (len(futures) < capacity and state.tasks < state.slots and state.pending > 0
                           and (self.max_calls is None or calls < self.max_calls)):
                        free = min(capacity - len(futures), state.slots - state.tasks)
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
                        self._submit(client, _Batch(state, keys), futures)
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
            try:
                done, _ = wait(list(futures), timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for future in done:
                self._finished(future, futures.pop(future), delayed, t0)
            self.progress.update(self._rows(tables, t0))

    def _sweep(self, tables: list[_Table]) -> bool:
        """Enqueue every table in full: at the start, and when idle (keys that other
        workers made ready); True when something is claimable."""
        found = False
        for state in tables:
            state.summary.enqueued += state.queue.enqueue(self.priority)
            state.pending = state.queue.counts()["pending"]
            found = found or (state.pending > 0 and state.slots > 0)
        return found

    def _submit(self, client, batch: _Batch, futures: dict) -> None:
        state = batch.table
        if state.started is None:
            state.started = time.monotonic()
        extra = {"resources": state.resources} if state.resources else {}
        future = client.submit(
            run_batch, state.info.full_name, batch.keys, pure=False, priority=state.info.depth, **extra
        )
        futures[future] = batch
        state.tasks += 1
        state.keys += len(batch.keys)
        state.summary.tasks += 1
        state.summary.largest_batch = max(state.summary.largest_batch, len(batch.keys))

    def _finished(self, future, batch: _Batch, delayed: list[_Batch], t0: float) -> None:
        state = batch.table
        state.tasks -= 1
        state.keys -= len(batch.keys)
        if future.status == "finished":
            outcomes = future.result()
        else:  # the task failed as a whole: its worker died, or it was lost
            try:
                reason = f"{type(future.exception()).__name__}: {future.exception()}"
            except Exception as err:  # a cancelled future has no exception to fetch
                reason = f"{type(err).__name__}: {err}"
            outcomes = [{"key": k, "status": "transient", "duration": 0.0, "error_message": reason,
                         "error_stack": None} for k in batch.keys]
        done, failed, transient = [], [], []
        for outcome in outcomes:
            status = outcome["status"]
            if status in ("success", "skipped"):
                done.append(outcome)
            elif status == "error":
                failed.append((outcome["key"], outcome["error_message"], outcome["error_stack"]))
                logger.error("%s %s: %s", state.summary.table, outcome["key"], outcome["error_message"])
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
        state.queue.fail(failed)
        state.summary.errors += len(failed)
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
    def _cancel_queued(self, client, futures: dict, delayed: list[_Batch]) -> None:
        """Cancel tasks no worker has started and release their keys; keep running ones."""
        try:
            executing = {k for keys in client.run(_executing).values() for k in keys}
        except Exception as err:  # workers gone: nothing is running
            logger.debug("Could not ask workers what they run: %s", err)
            executing = set()
        queued = [f for f in futures if str(f.key) not in executing]
        client.cancel(queued)
        for future in queued:
            batch = futures.pop(future)
            batch.table.tasks -= 1
            batch.table.keys -= len(batch.keys)
            batch.table.queue.release(batch.keys)
        for batch in delayed:
            batch.table.queue.release(batch.keys)
        delayed.clear()
        logger.warning(
            "Stopping: %d queued task(s) cancelled and their keys released; waiting up to %.0f s for %d running.",
            len(queued), self.grace, len(futures),
        )

    def _shutdown(self, client, cluster, futures: dict, delayed: list[_Batch]) -> None:
        for future in futures:
            future.cancel()
        if cluster is not None:
            # Closing the cluster kills its workers, which rolls back any make()
            # still in its transaction: no partial rows.
            client.close()
            cluster.close()
        for batch in [*futures.values(), *delayed]:
            try:
                batch.table.queue.release(batch.keys)
            except Exception as err:  # keep the error that stopped the campaign
                logger.error("Could not release %d keys of %s: %s", len(batch.keys), batch.table.summary.table, err)
        futures.clear()
        delayed.clear()

    # -- progress ------------------------------------------------------------------
    @staticmethod
    def _rows(tables: list[_Table], t0: float) -> list[dict[str, Any]]:
        now = time.monotonic()
        rows = []
        for state in tables:
            s = state.summary
            elapsed = now - state.started if state.started else 0.0
            rate = s.done / elapsed if elapsed > 0 else 0.0
            left = state.pending + state.keys
            rows.append({
                "table": s.table, "done": s.done, "in_flight": state.keys, "pending": state.pending,
                "errors": s.errors, "rate": rate, "eta": left / rate if rate > 0 and left else None,
            })
        return rows
