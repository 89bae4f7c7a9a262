"""The complete step: what a finished task's keys come to, and the stream step after it.

:meth:`Completion.batch` records a batch's outcomes in the jobs table: keys
made are deleted from it (or marked ``success``), keys whose ``make()`` raised
become error rows at once, transient failures are tried again with backoff
(:class:`djdask.campaign.outcomes.RetryPolicy`), keys a retiring worker did not start
go back uncharged; then :func:`stream` enqueues the child tables' keys that the
keys made have made ready.  A task that failed as a whole (its worker died)
waits in :class:`djdask.campaign.losses.Losses` for its worker's exit report, and
:meth:`Completion.judged` carries out the verdict: the culprit charged an
attempt (or failed now, for a time limit), the rest run again uncharged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from djdask.campaign.inflight import Batch, InFlight
from djdask.campaign.losses import Losses, Verdict
from djdask.campaign.outcomes import RetryPolicy, classify
from djdask.campaign.tables import fewest_explaining
from djdask.db.connect import redact
from djdask.records.accounting import Accounting

if TYPE_CHECKING:
    from djdask.campaign.tables import TableState
    from djdask.monitor.publisher import StatePublisher

__all__ = ["Completion", "stream"]

logger = logging.getLogger(__name__)


def stream(state: TableState, made: Sequence[dict], priority: int | None) -> int:
    """The streaming step: keys just made in ``state``'s table make keys of its child
    tables ready; enqueue those now (``(child.key_source & made) - child``), so the
    children's keys run without waiting for this table to finish.  Returns how many."""
    total = 0
    if not made:
        return total
    for child in state.children:
        added = child.queue.enqueue(priority, among=made)
        child.summary.enqueued += added
        child.pending += added
        total += added
    return total


class Completion:
    """The complete step of one campaign.

    Parameters
    ----------
    inflight : InFlight
        Where batches to run again go.
    losses : Losses
        Where tasks that failed as a whole wait to be judged.
    retry : RetryPolicy
    publisher : StatePublisher
        Takes the latest errors for the campaign page.
    secrets : list of str
        Masked in what is logged (filled when the campaign runs).
    priority : int, optional
        The campaign's priority, for the keys streamed to child tables.
    max_lost : int
        Times a key may be lost with its worker, no culprit found, before it is an error row.
    db : callable, optional
        Runs each database statement (``db(fn)``), waiting out outages (:meth:`djdask.db.outage.Outage.call`).
    accounting : Accounting, optional
        Takes each batch's make() durations and worker memory (:mod:`djdask.records.accounting`).
    """

    def __init__(
        self,
        inflight: InFlight,
        losses: Losses,
        retry: RetryPolicy,
        publisher: StatePublisher,
        secrets: list[str],
        *,
        priority: int | None,
        max_lost: int,
        db: Callable[[Callable[[], Any]], Any] = lambda fn: fn(),
        accounting: Accounting | None = None,
    ) -> None:
        self.db = db
        self.accounting = accounting
        self.inflight = inflight
        self.losses = losses
        self.retry = retry
        self.publisher = publisher
        self.secrets = secrets
        self.priority = priority
        self.max_lost = max_lost

    def batch(self, future: Any, batch: Batch, t0: float) -> None:
        """The complete step: record a finished batch's outcomes in the jobs table, retry or
        fail its transient keys, and stream the keys it made to the child tables."""
        state = batch.table
        outcomes, error = batch.outcomes, None
        try:
            if outcomes is None:
                outcomes = future.result() if future.status == "finished" else None
        except Exception as err:  # its result was lost with its worker before it could be fetched
            error = err
        if outcomes is None:  # failed as a whole: judged when its worker's exit is known
            self.losses.hold(batch, future, error)
            return
        result = classify(outcomes)
        if self.accounting is not None:
            self.accounting.batch(state.summary.table, state.pool.name if state.pool else "default", outcomes)
        failed = self._defer(batch, list(result.failed))
        for key, message, _ in failed:
            logger.error("%s %s: %s", state.summary.table, key, redact(message or "", self.secrets))
        done = [(o["key"], o["duration"]) for o in result.done]
        self.db(lambda: state.queue.complete(done))
        made = [o for o in result.done if o["status"] == "success"]
        self._credit(batch, len(made))
        state.sizer.observe([o["duration"] for o in made])
        state.summary.make_seconds += sum(o["duration"] for o in made)
        state.summary.commit_seconds += sum(o.get("commit") or 0.0 for o in made)
        decision = self.retry.decide(batch.attempt, result.transient)
        reason = result.transient[-1]["error_message"] if result.transient else None
        if decision.retry:
            logger.warning(
                "%s: %d key(s) failed transiently (%s); retry %d/%d in %.1f s",
                state.summary.table,
                len(decision.retry),
                reason,
                decision.attempt,
                self.retry.max_attempts,
                decision.wait,
            )
            state.summary.retries += len(decision.retry)
            self.inflight.delay(Batch(state, decision.retry, decision.attempt, time.monotonic() + decision.wait))
        if decision.failed:
            failed.extend(decision.failed)
            logger.error(
                "%s: %d key(s) failed %d times: %s", state.summary.table, len(decision.failed), batch.attempt, reason
            )
        if result.requeue:  # not started: its worker is retiring, or the campaign stops; no attempt charged
            logger.info(
                "%s: %d key(s) not started (their worker retires, or the campaign stops): requeued",
                state.summary.table,
                len(result.requeue),
            )
            self.inflight.delay(Batch(state, result.requeue, batch.attempt, time.monotonic()))
        self.db(lambda: state.queue.fail(failed))
        self.publisher.record_errors(state.summary.table, failed)
        state.record(result.succeeded, result.skipped, len(failed), t0)
        self.db(lambda: stream(state, result.made, self.priority))

    def _defer(self, batch: Batch, failed: list[tuple[dict, str, str | None]]) -> list[tuple[dict, str, str | None]]:
        """Keys whose make() raised while tables declared before theirs (neither ancestors nor
        descendants: what a make() may read beyond its dependencies) still had keys to make
        are not charged: they wait, reserved, until one of those tables is done, and run
        again (:attr:`Batch.after`); sequential populate() would have made those first.
        They wait again while fewer such tables are busy than the last time, and are charged
        once none is, or no fewer.  Returns the failures that stand."""
        state = batch.table
        if not failed:
            return failed
        busy = [t for t in state.earlier if self.inflight.busy(t)]
        if not busy or (batch.waited and not set(map(id, busy)) < set(map(id, batch.after))):
            return failed
        keys = [key for key, _, _ in failed]
        logger.info(
            "%s: %d key(s) failed while %s, declared before it, still had keys to make; they run again once "
            "one of those is done (no attempt charged). First error: %s",
            state.summary.table,
            len(keys),
            ", ".join(t.summary.table for t in busy),
            redact(failed[0][1] or "", self.secrets),
        )
        if not batch.waited:
            state.summary.deferred += len(keys)
        told = " ".join(f"{message or ''} {stack or ''}" for _, message, stack in failed)
        named = tuple(t.summary.table for t in busy if re.search(rf"\b{re.escape(t.summary.table)}\b", told))
        self.inflight.delay(
            Batch(state, keys, batch.attempt, time.monotonic(), batch.lost, after=tuple(busy), waited=True, named=named)
        )
        return []

    def _credit(self, batch: Batch, made: int) -> None:
        """Keys that had waited (:meth:`_defer`) were made: what their make() reads is the table
        its error or traceback named, else one of the tables they waited for that are done now.  The fewest tables that explain every
        such wait of the table are named at the campaign's end (:func:`fewest_explaining`)."""
        if not batch.after or not made:
            return
        summary = batch.table.summary
        summary.deferred_made += made
        state = batch.table
        done = frozenset(t.summary.table for t in batch.after if not self.inflight.busy(t))
        # A table the make()'s traceback names is what it read; else one of those done since.
        state.waits.append(frozenset(batch.named) or done)
        summary.deferred_for = fewest_explaining(state.waits)

    def judged(self, batch: Batch, verdict: Verdict, t0: float) -> None:
        """A batch whose task failed as a whole, judged (:func:`djdask.campaign.losses.judge`): its
        culprit charged an attempt, or failed now; the other keys run again uncharged."""
        state, now = batch.table, time.monotonic()
        table = state.summary.table
        failed: list[tuple[dict, str, str | None]] = []
        if verdict.requeue:
            lost = batch.lost + (1 if verdict.lost else 0)
            if lost >= self.max_lost:
                failed += [
                    (k, f"lost with its worker {lost} times; last: {verdict.reason}", None) for k in verdict.requeue
                ]
            else:
                half = (len(verdict.requeue) + 1) // 2 if verdict.split else len(verdict.requeue)
                for start in range(0, len(verdict.requeue), half):
                    self.inflight.delay(Batch(state, verdict.requeue[start : start + half], batch.attempt, now, lost))
                logger.warning(
                    "%s: %d key(s) run again, no attempt charged: %s",
                    table,
                    len(verdict.requeue),
                    redact(verdict.reason, self.secrets),
                )
        if verdict.culprit is not None:
            logger.error("%s %s: %s", table, verdict.culprit, redact(verdict.reason, self.secrets))
            if verdict.final:
                failed.append((verdict.culprit, verdict.reason, None))
            else:
                outcome = {"key": verdict.culprit, "error_message": verdict.reason, "error_stack": None}
                decision = self.retry.decide(batch.attempt, [outcome])
                if decision.retry:
                    state.summary.retries += len(decision.retry)
                    self.inflight.delay(Batch(state, decision.retry, decision.attempt, now + decision.wait))
                failed.extend(decision.failed)
        self.db(lambda: state.queue.fail(failed))
        self.publisher.record_errors(table, failed)
        state.record(0, 0, len(failed), t0)
