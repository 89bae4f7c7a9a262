"""The campaign loop: enqueue, claim, dispatch to Dask, record outcomes.

This first loop takes the tables one at a time in dependency order.  For each
table it enqueues the missing keys into the table's jobs table, claims them in
batches, runs each batch as a Dask task on a worker process, and writes the
outcomes back.  A window of batches per worker is in flight at a time, so a
campaign never holds a table's whole queue.  A batch whose worker died goes
back to pending and is resubmitted; a ``make()`` that raises becomes an error
row at once.  Whatever ends the loop, keys this campaign still holds are
released to pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import config
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
    seconds: float = 0.0
    tasks: int = 0


@dataclass
class CampaignSummary:
    """What a campaign did, per table, and where its dashboard was."""

    tables: list[TableSummary] = field(default_factory=list)
    seconds: float = 0.0
    dashboard_link: str | None = None

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.tables)

    @property
    def exit_code(self) -> int:
        """0 when every attempted key succeeded, 1 otherwise."""
        return 1 if self.errors else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": [asdict(t) for t in self.tables],
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "exit_code": self.exit_code,
        }


@dataclass
class _Batch:
    queue: JobQueue
    keys: list[dict]
    attempts: int = 1


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
    ) -> None:
        self.selection = pipeline if isinstance(pipeline, Selection) else select(pipeline, targets, restrictions)
        self.workers = workers
        self.client = client
        self.progress = progress or TerminalProgress(enabled=False)
        self.batch_size = int(config.get("campaign.batch-size"))
        self.window = int(config.get("campaign.batches-per-worker"))
        self.max_attempts = int(config.get("campaign.max-attempts"))
        self.dashboard_link: str | None = None

    # -- cluster -------------------------------------------------------------
    def _start(self):
        from distributed import Client

        from clusters import local_cluster

        cluster = None
        client = self.client
        if client is None:
            cluster = local_cluster(self.workers)
            client = Client(cluster)
        client.register_plugin(PipelinePlugin(self.selection.module_name), name=PipelinePlugin.name)
        self.dashboard_link = client.dashboard_link
        return client, cluster

    def _queues(self) -> dict[str, JobQueue]:
        """One queue per table; DataJoint creates missing jobs tables here."""
        tables = self.selection.tables
        first = tables[self.selection.graph.order[0]]() if len(self.selection.graph) else None
        if first is None:
            return {}
        for warning in check_legacy_jobs(first.connection, {t.database for t in tables.values()}):
            logger.warning(warning)
        owner = Owner.of(first.connection)
        return {
            info.full_name: JobQueue(tables[info.full_name](), self.selection.restriction, owner)
            for info in self.selection.graph
        }

    def run(self) -> CampaignSummary:
        """Run the campaign to the end; return its summary."""
        start = time.perf_counter()
        summary = CampaignSummary()
        queues = self._queues()
        if not queues:
            return summary
        connection = next(iter(queues.values())).connection
        # Keys left reserved by campaigns or workers that died go back to pending
        # now, without waiting for any timeout.
        recover_orphans(connection, [q.name for q in queues.values()])
        heartbeat = Heartbeat(connection, next(iter(queues.values())).owner)
        for queue in queues.values():
            heartbeat.watch(queue.name)
        client, cluster = self._start()
        summary.dashboard_link = self.dashboard_link
        self.progress.started(self.dashboard_link)
        held: dict[Any, _Batch] = {}
        heartbeat.start()
        try:
            n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
            for info in self.selection.graph:
                summary.tables.append(self._run_table(client, queues[info.full_name], info, n_workers, held))
        finally:
            for future in held:
                future.cancel()
            if cluster is not None:
                # Closing the cluster kills its workers, which rolls back any
                # make() still in its transaction: no partial rows.
                client.close()
                cluster.close()
            for batch in held.values():
                try:
                    batch.queue.release(batch.keys)
                except Exception as err:  # keep the error that stopped the campaign
                    logger.error("Could not release %d keys of %s: %s", len(batch.keys), batch.queue.table.class_name, err)
            heartbeat.stop()
        summary.seconds = time.perf_counter() - start
        return summary

    def _run_table(self, client, queue: JobQueue, info, n_workers: int, held: dict) -> TableSummary:
        from distributed import wait

        ts = TableSummary(info.class_name)
        t0 = time.perf_counter()
        ts.enqueued = queue.enqueue()
        pending = queue.counts()["pending"]
        total = pending
        capacity = n_workers * self.window
        # Spread a small queue over every worker rather than filling one batch.
        batch_size = max(1, min(self.batch_size, -(-pending // capacity)))

        def submit(batch: _Batch) -> None:
            future = client.submit(run_batch, info.full_name, batch.keys, pure=False, priority=info.depth)
            held[future] = batch
            ts.tasks += 1

        exhausted = False
        while True:
            while not exhausted and sum(1 for b in held.values() if b.queue is queue) < capacity:
                keys = queue.claim(batch_size)
                if not keys:
                    exhausted = True
                    break
                submit(_Batch(queue, keys))
            mine = [f for f, b in held.items() if b.queue is queue]
            if not mine:
                break
            done, _ = wait(mine, return_when="FIRST_COMPLETED")
            for future in done:
                batch = held.pop(future)
                if future.status == "finished":
                    self._record(queue, future.result(), ts)
                else:
                    self._failed_batch(future, batch, queue, ts, submit)
            done_count = ts.succeeded + ts.skipped + ts.errors
            total = max(total, done_count)
            self.progress.update(info.class_name, done_count, total, ts.errors, time.perf_counter() - t0)
        ts.seconds = time.perf_counter() - t0
        self.progress.finish(info.class_name, ts.succeeded + ts.skipped + ts.errors, total, ts.errors, ts.seconds)
        return ts

    def _record(self, queue: JobQueue, outcomes: list[dict], ts: TableSummary) -> None:
        done, failed = [], []
        for outcome in outcomes:
            if outcome["status"] == "error":
                failed.append((outcome["key"], outcome["error_message"], outcome["error_stack"]))
                logger.error("%s %s: %s", ts.table, outcome["key"], outcome["error_message"])
                ts.errors += 1
            else:
                done.append((outcome["key"], outcome["duration"]))
                if outcome["status"] == "success":
                    ts.succeeded += 1
                else:
                    ts.skipped += 1
        queue.complete(done)
        queue.fail(failed)

    def _failed_batch(self, future, batch: _Batch, queue: JobQueue, ts: TableSummary, submit) -> None:
        """A task failed as a whole (its worker died, it was cancelled): retry, then record."""
        try:
            reason = repr(future.exception())
        except Exception as err:  # a cancelled future has no exception to fetch
            reason = repr(err)
        if batch.attempts < self.max_attempts:
            logger.warning("%s: batch of %d keys failed (%s); retrying", ts.table, len(batch.keys), reason)
            batch.attempts += 1
            submit(batch)
            return
        queue.fail([(key, f"Batch failed {batch.attempts} times: {reason}", None) for key in batch.keys])
        ts.errors += len(batch.keys)

