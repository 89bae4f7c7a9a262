"""Batches whose task failed as a whole: which key is charged, and why.

A task fails as a whole when its worker process dies, or when something
outside ``make()`` raises.  Either way no outcome came back, and one bad key
must not harm the keys it travelled with.

- The worker died.  Djdask's clusters run with Dask's ``allowed-failures`` at
  0, so the scheduler gives such a task up at once (``KilledWorker``) instead
  of running it on more workers.  The worker's nanny reports how the process
  ended and which key it was running (:mod:`djdask.worker.watchdog`); :class:`Losses`
  holds the batch until that report is in (or a few seconds have passed) and
  :func:`judge` decides: the running key is charged an attempt, with the
  reason as its error message ("killed: memory limit 512.00 MiB exceeded
  (peak ~530.10 MiB)", "killed by signal 11 (SIGSEGV) while running this
  key", "timed out after 2h"); the other keys go back uncharged (those already committed are
  skipped when they run again).  A worker stopped from outside (its batch job
  reached its walltime or was preempted: SIGTERM, or no report at all because
  the nanny went too) charges nobody.
- Something outside ``make()`` raised (the batch could not be unpacked, its
  result not sent back): the batch is split in two and each half runs again,
  uncharged, down to single keys; a single key that fails so is charged.

Keys that keep being lost without a culprit (``djdask.campaign.max-lost``
times) become error rows, so that a campaign always ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

from djdask.worker.watchdog import TOPIC, describe_exit

if TYPE_CHECKING:
    from djdask.campaign.inflight import Batch

__all__ = ["Losses", "Verdict", "duration_text", "judge", "worker_of"]

logger = logging.getLogger(__name__)

#: distributed's nanny logs this event (worker, pid, rss) when it restarts a worker for memory.
MEMORY_TOPIC = "worker-restart-memory"

#: A worker is taken as killed for memory when its peak reached this share of its limit.
MEMORY_EVIDENCE = 0.9


@dataclass
class Verdict:
    """What happens to the keys of a batch whose task failed as a whole."""

    requeue: list[dict] = field(default_factory=list)  # run again, no attempt charged
    split: bool = False  # run ``requeue`` again as two batches (to isolate a culprit)
    lost: bool = False  # the keys were lost with no culprit: counts toward max-lost
    culprit: dict | None = None  # charged an attempt ...
    reason: str = ""  # ... for this reason (its error message)
    final: bool = False  # the culprit is an error row now, whatever its attempts (a time limit)


def duration_text(seconds: float) -> str:
    """``2h``, ``1h 30m``, ``45m``, ``90s``, ``1.5s``: a time limit as people write it."""
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    hours, minutes = divmod(int(seconds) // 60, 60)
    return " ".join(part for part in (f"{hours}h" if hours else "", f"{minutes}m" if minutes else "") if part)


def worker_of(error: BaseException | None) -> str | None:
    """The address of the worker a ``KilledWorker`` error names, else None."""
    last = getattr(error, "last_worker", None)
    return getattr(last, "address", None)


def _memory_reason(report: dict[str, Any], rss: int | None) -> str | None:
    limit = report.get("memory_limit")
    peak = max(int(report.get("peak") or 0), int(rss or 0))
    if rss is None and not (limit and peak >= MEMORY_EVIDENCE * limit):
        return None
    if limit:
        return f"killed: memory limit {format_bytes(limit)} exceeded (peak ~{format_bytes(peak)})"
    return f"killed for memory (peak ~{format_bytes(peak)})"


def _past(how: str) -> str:
    return f"was {how}" if how.startswith("killed") else how


def judge(
    keys: Sequence[dict],
    task: str,
    error: str,
    *,
    died: bool,
    report: dict[str, Any] | None = None,
    memory_rss: int | None = None,
) -> Verdict:
    """Decide for a batch of ``keys`` whose task ``task`` failed as a whole with ``error``.

    Parameters
    ----------
    died : bool
        Whether its worker died (else something outside ``make()`` raised).
    report : dict, optional
        The nanny's report of the worker's exit (:mod:`djdask.worker.watchdog`).
    memory_rss : int, optional
        Memory of the worker when its nanny restarted it for exceeding its limit.
    """
    keys = list(keys)
    if not died:
        if len(keys) > 1:
            return Verdict(requeue=keys, split=True, reason=error)
        return Verdict(culprit=keys[0], reason=error)
    if report is None:  # no nanny said how: a job ended, or a worker without a nanny (split: a culprit shows)
        return Verdict(requeue=keys, split=len(keys) > 1, lost=True, reason=f"its worker was lost ({error[:200]})")
    beacon = report.get("beacon") or {}
    memory = _memory_reason(report, memory_rss)
    how = "was killed for memory" if memory else _past(describe_exit(report.get("exitcode")))
    running = beacon.get("task") == task and isinstance(beacon.get("index"), int) and beacon["index"] < len(keys)
    if not running:  # the batch waited on that worker: nothing of it ran there
        return Verdict(requeue=keys, lost=True, reason=f"its worker {how} while this batch waited")
    index = beacon["index"]
    culprit, others = keys[index], keys[:index] + keys[index + 1 :]
    if report.get("timed_out"):
        limit = float(beacon.get("timeout") or 0)
        return Verdict(requeue=others, culprit=culprit, reason=f"timed out after {duration_text(limit)}", final=True)
    if memory is not None:
        return Verdict(requeue=others, culprit=culprit, reason=memory)
    if report.get("exitcode") == -15:  # SIGTERM from outside: a walltime, a preemption, scancel
        return Verdict(requeue=keys, lost=True, reason=f"its worker was stopped from outside ({how})")
    reason = f"{describe_exit(report.get('exitcode'))} while running this key"
    if report.get("exitcode") == -9:
        reason += " (by the system or the batch system: most often for memory"
        reason += f", peak ~{format_bytes(int(report['peak']))})" if report.get("peak") else ")"
    return Verdict(requeue=others, culprit=culprit, reason=reason)


@dataclass
class _Held:
    batch: Batch
    task: str
    error: str
    worker: str | None
    died: bool
    until: float  # monotonic: judged without a report after this


class Losses:
    """Batches whose task failed as a whole, held until their worker's exit report is in.

    Parameters
    ----------
    wait : float
        Seconds to wait for a dead worker's report before judging without it.
    """

    def __init__(self, wait: float = 5.0) -> None:
        self.wait = wait
        self._lock = threading.Lock()
        self._reports: dict[str, dict[str, Any]] = {}  # worker address -> its exit report
        self._memory: dict[tuple[str, int], int] = {}  # (worker, pid) -> rss when restarted for memory
        self._held: list[_Held] = []

    def __len__(self) -> int:
        return len(self._held)

    def subscribe(self, client: Any) -> None:
        """Receive the exit reports of ``client``'s workers."""
        client.subscribe_topic(TOPIC, self._on_exit)
        client.subscribe_topic(MEMORY_TOPIC, self._on_memory)

    def _on_exit(self, event: tuple[float, dict[str, Any]]) -> None:
        report = event[1]
        if report.get("worker"):
            with self._lock:
                self._reports[report["worker"]] = report

    def _on_memory(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        with self._lock:
            self._memory[(msg.get("worker"), msg.get("pid"))] = int(msg.get("rss") or 0)

    def hold(self, batch: Batch, future: Any, error: BaseException | None = None) -> None:
        """Keep a batch whose task failed as a whole (with ``error``, default the future's)
        until it can be judged."""
        if error is None:
            try:
                error = future.exception()
            except Exception as err:  # a cancelled future has no exception to fetch
                error = err
        worker = worker_of(error)
        if error is None:  # no exception: the task had finished, its result was lost with its worker
            text, died = "its result was lost with its worker before the campaign fetched it", True
        else:
            text = f"{type(error).__name__}: {error}"
            died = worker is not None or type(error).__name__ == "KilledWorker"
        # The task that was killed: the batch's own, or one it waited for (a split make()'s
        # make_compute, whose worker's beacon then names the key that ran).
        task = str(getattr(error, "task", None) or future.key)
        self._held.append(_Held(batch, task, text, worker, died, time.monotonic() + (self.wait if died else 0.0)))

    def ready(self, now: float | None = None) -> list[tuple[Batch, Verdict]]:
        """The held batches that can be judged now: their worker's report is in, or the wait is over."""
        now = time.monotonic() if now is None else now
        judged, kept = [], []
        with self._lock:
            for held in self._held:
                report = self._reports.get(held.worker) if held.worker else None
                if report is None and now < held.until:
                    kept.append(held)
                    continue
                rss = self._memory.get((held.worker, report.get("pid"))) if report else None
                verdict = judge(held.batch.keys, held.task, held.error, died=held.died, report=report, memory_rss=rss)
                judged.append((held.batch, verdict))
            self._held = kept
        return judged

    def batches(self) -> list[Batch]:
        """The batches held now (their keys are still reserved by the campaign)."""
        return [h.batch for h in self._held]

    def drain(self) -> list[Batch]:
        """Every batch still held (the campaign stops): their keys go back to the queue."""
        batches = [h.batch for h in self._held]
        self._held = []
        return batches
