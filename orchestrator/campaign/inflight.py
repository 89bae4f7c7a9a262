"""The batches a campaign has out: submitted to Dask, or waiting to be retried.

:class:`InFlight` owns them.  It submits a batch to its table's pool and
counts it on the table and the pool, hands back batches as their futures
finish (from any pool's client, through one queue), keeps transient failures
until their backoff has passed, and on the way out cancels what no worker has
started and gives those keys back to the jobs table.  The campaign holds
nothing else, so its memory does not grow with the number of missing keys.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from djdask.campaign.split import submit_split
from djdask.worker.executor import run_batch

if TYPE_CHECKING:
    from djdask.campaign.tables import TableState

__all__ = ["Batch", "InFlight", "claim_and_submit"]

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """Keys of one table that travel together in one Dask task."""

    table: TableState
    keys: list[dict]
    attempt: int = 1
    ready: float = 0.0  # monotonic time before which a retry waits
    lost: int = 0  # times its keys were lost with a worker, no culprit charged (djdask.campaign.losses)
    outcomes: list[dict] | None = None  # its task's result, once fetched (InFlight.finished)
    #: Tables one of which must have nothing left to make before it runs: its make()s raised
    #: while these, declared before its table, still had keys to make (:meth:`Completion.batch`).
    after: tuple[TableState, ...] = ()
    waited: bool = False  # it has waited so (a failure is charged once it may not wait again)
    #: Of the tables it waited for, those its make()'s error or traceback names (the code line
    #: that read one shows in the stack): what the campaign's order hint names, when any is.
    named: tuple[str, ...] = ()


class InFlight:
    """Submitted and delayed batches of one campaign.

    Parameters
    ----------
    make_kwargs : dict, optional
        Passed to every ``make()``.
    version : str, optional
        The campaign's code version, stamped by the workers on the rows' job metadata.
    tolerance : float
        Seconds a worker waits for the database when its connection fails.
    walltime_margin : float
        A worker starts a key only if its lifetime left exceeds the table's mean measured
        ``make()`` duration times this.
    """

    def __init__(
        self,
        *,
        make_kwargs: dict | None = None,
        version: str | None = None,
        tolerance: float = 600.0,
        walltime_margin: float = 1.5,
    ) -> None:
        self.make_kwargs = make_kwargs
        self.version = version
        self.tolerance = tolerance  # how long a worker waits for the database
        self.walltime_margin = walltime_margin  # expected make() = measured mean x this
        self.futures: dict[Any, Batch] = {}
        self.delayed: list[Batch] = []
        self._done: queue.Queue = queue.Queue()  # futures as they finish, from any pool's client

    def __bool__(self) -> bool:
        """Whether tasks are out (delayed batches do not count: they wait here)."""
        return bool(self.futures)

    def __len__(self) -> int:
        return len(self.futures)

    # -- out -------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        """Send a batch to its table's pool as one task; count it in flight."""
        state = batch.table
        if state.started is None:
            state.started = time.monotonic()
        extra = {"resources": state.resources} if state.resources else {}
        if state.split:
            future = submit_split(state.pool.client, state, batch.keys, self.make_kwargs, self.version, self.tolerance)
        else:
            future = self._submit_batch(state, batch, extra)
        self.futures[future] = batch
        future.add_done_callback(self._done.put)
        state.pool.tasks += 1
        state.tasks += 1
        state.keys += len(batch.keys)
        state.summary.tasks += 1
        state.summary.largest_batch = max(state.summary.largest_batch, len(batch.keys))

    def _submit_batch(self, state: TableState, batch: Batch, extra: dict[str, Any]) -> Any:
        return state.pool.client.submit(
            run_batch,
            state.info.full_name,
            batch.keys,
            self.make_kwargs,
            self.version,
            state.timeout,
            self.tolerance,
            None if state.sizer.per_key is None else state.sizer.per_key * self.walltime_margin,
            state.group,
            pure=False,
            priority=state.info.depth,
            **extra,
        )

    def delay(self, batch: Batch) -> None:
        """Keep a batch until ``batch.ready`` (a retry's backoff)."""
        self.delayed.append(batch)

    def submit_due(self, now: float) -> None:
        """Submit the delayed batches whose time has come, where their pool has room."""
        for batch in [
            b
            for b in self.delayed
            if b.ready <= now and b.table.pool.tasks < b.table.pool.capacity and not self.waiting(b)
        ]:
            self.delayed.remove(batch)
            self.submit(batch)

    def next_due(self) -> float | None:
        """When the earliest delayed batch is due (monotonic), or None; batches that wait for
        other tables (:attr:`Batch.after`) are not due while those have keys to make."""
        return min((b.ready for b in self.delayed if not self.waiting(b)), default=None)

    def busy(self, state: TableState, besides: Batch | None = None) -> bool:
        """Whether ``state``'s table, or a table above it in the campaign, has keys to make:
        pending, in flight, or waiting here (``besides`` not counted)."""
        family = (state, *state.ancestors)
        if any(t.pending > 0 or t.keys > 0 for t in family):
            return True
        ids = {id(t) for t in family}
        return any(id(b.table) in ids for b in self.delayed if b is not besides)

    def waiting(self, batch: Batch) -> bool:
        """Whether a batch still waits: every table of its :attr:`Batch.after` has keys to make."""
        return bool(batch.after) and all(self.busy(t, besides=batch) for t in batch.after)

    def stop_waiting(self) -> int:
        """Let every batch that waits for other tables run (nothing else can run: the campaign
        would end with them); return how many."""
        waiting = [b for b in self.delayed if self.waiting(b)]
        for batch in waiting:
            batch.ready = 0.0
            batch.after = batch.after[:0]  # runs now; a failure then is charged
        return len(waiting)

    # -- back ------------------------------------------------------------------------
    def finished(self, timeout: float) -> Iterator[tuple[Any, Batch]]:
        """``(future, batch)`` for each task finished since the last call, waiting up to
        ``timeout`` seconds for the first; each no longer counts as in flight."""
        try:
            done = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        landed = []
        for future in done:
            batch = self.futures.pop(future, None)
            if batch is not None:  # not one cancelled and forgotten while stopping
                self.landed(batch)
                landed.append((future, batch))
        self._fetch(landed)
        yield from landed

    @staticmethod
    def _fetch(landed: Sequence[tuple[Any, Batch]]) -> None:
        """Fetch the results of finished tasks, one round trip per pool's client for all of
        them (``Future.result()`` would make one each: with 64 workers, most of the loop's
        time); if that fails (a result lost with its worker), each is fetched on its own later."""
        by_client: dict[int, list[tuple[Any, Batch]]] = {}
        for future, batch in landed:
            if future.status == "finished":
                by_client.setdefault(id(future.client), []).append((future, batch))
        for group in by_client.values():
            if len(group) < 2:
                continue
            try:
                results = group[0][0].client.gather([future for future, _ in group])
            except Exception as err:  # Completion fetches each one and sees which failed
                logger.debug("Could not fetch %d results at once: %s", len(group), err)
                continue
            for (_, batch), outcomes in zip(group, results):
                batch.outcomes = outcomes

    @staticmethod
    def landed(batch: Batch) -> None:
        """A submitted batch is no longer in flight (finished, cancelled or abandoned):
        undo what :meth:`submit` counted."""
        state = batch.table
        state.pool.tasks -= 1
        state.tasks -= 1
        state.keys -= len(batch.keys)

    @staticmethod
    def release(batch: Batch) -> None:
        """Give a batch's keys back to the queue: pending again, for this campaign's next
        claim or another worker's."""
        batch.table.queue.release(batch.keys)
        batch.table.pending += len(batch.keys)

    def held_keys(self, also: Iterable[Batch] = ()) -> dict[int, list[dict]]:
        """The keys of every batch out, waiting to be retried, or in ``also``, by table (``id``
        of its state)."""
        held: dict[int, list[dict]] = {}
        for batch in [*self.futures.values(), *self.delayed, *also]:
            held.setdefault(id(batch.table), []).extend(batch.keys)
        return held

    # -- stopping --------------------------------------------------------------------
    def cancel_queued(self, executing: set[str]) -> int:
        """Cancel tasks no worker has started (``executing``: the keys of tasks that run)
        and release their keys and the delayed ones'; return how many tasks were cancelled.
        A task that has finished, its result not yet taken, is left for the loop to complete."""
        queued = [f for f in self.futures if f.status == "pending" and str(f.key) not in executing]
        for future in queued:
            future.cancel()
            batch = self.futures.pop(future)
            self.landed(batch)
            self.release(batch)
        for batch in self.delayed:
            self.release(batch)
        self.delayed.clear()
        return len(queued)

    def shutdown(self, close_pools) -> None:
        """Cancel everything, close the pools (``close_pools()``), release every key still held."""
        for future in self.futures:
            future.cancel()
        close_pools()
        for batch in self.futures.values():
            self.landed(batch)
        for batch in [*self.futures.values(), *self.delayed]:
            try:
                self.release(batch)
            except Exception as err:  # keep the error that stopped the campaign
                logger.error("Could not release %d keys of %s: %s", len(batch.keys), batch.table.summary.table, err)
        self.futures.clear()
        self.delayed.clear()


def claim_and_submit(
    deepest_first: Sequence[TableState],
    inflight: InFlight,
    budget: int | None,
    db: Callable[[Callable[[], Any]], Any],
    *,
    priority: int | None,
) -> int:
    """The claim and dispatch steps: fill free task slots, deepest tables first, with batches
    claimed from their jobs tables (each claim run through ``db``, which waits out a database
    outage), at most ``budget`` keys in all (None: no limit); return how many were claimed."""
    claimed = 0
    for state in deepest_first:
        state.warn_unserved()
        pool = state.pool
        while pool.tasks < pool.capacity and state.tasks < state.slots and state.pending > 0:
            if budget is not None and claimed >= budget:
                return claimed
            free = min(pool.capacity - pool.tasks, state.slots - state.tasks)
            size = state.sizer.size(pending=state.pending, slots=free)
            # One claim for every free slot's batch: a claim is a transaction (five
            # statements), and 64 workers free slots faster than one claim each keeps up with.
            n = size * max(1, min(free, -(-state.pending // size)))
            if budget is not None:
                n = min(n, budget - claimed)
            keys = db(lambda n=n, queue=state.queue: queue.claim(n, max_priority=priority))
            if not keys:
                state.pending = 0
                break
            state.pending = max(0, state.pending - len(keys))
            claimed += len(keys)
            for start in range(0, len(keys), size):
                inflight.submit(Batch(state, keys[start : start + size]))
    return claimed
