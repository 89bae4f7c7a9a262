"""A campaign's state, for the terminal and for the campaign page of each pool's dashboard.

:class:`StatePublisher` keeps the latest errors, builds the state a campaign
publishes (see :class:`~djdask.monitor.progress.CampaignBoard` for its layout),
feeds the terminal's board a few times a second and sends the state to each
pool's scheduler every ``djdask.campaign.publish-interval``, never holding up
the campaign's loop.  Secrets are masked in everything it publishes.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from djdask.config import namespace as config
from djdask.db.clock import utc_text
from djdask.db.connect import redact
from djdask.jobs.queue import ERROR_MESSAGE_LENGTH
from djdask.monitor.progress import HISTORY_KEY, METADATA_KEY, CampaignBoard, TerminalProgress
from djdask.records.notify import ErrorWatch

if TYPE_CHECKING:
    from djdask.campaign.pools import Pool, Pools
    from djdask.campaign.tables import TableState
    from djdask.records.accounting import Accounting

__all__ = ["StatePublisher", "history_entry"]

logger = logging.getLogger(__name__)


class StatePublisher:
    """Publishes one campaign's state.

    Parameters
    ----------
    pools : Pools
        Where the state goes (each pool's scheduler).
    identity : dict
        The campaign's id, module, start time, host, pid, user.
    secrets : list of str
        Masked in every published message.
    progress : TerminalProgress
        The terminal's output.
    interval : float, optional
        Seconds between publications; default ``djdask.campaign.publish-interval``.
    """

    def __init__(
        self,
        pools: Pools,
        identity: dict[str, Any],
        secrets: list[str],
        progress: TerminalProgress,
        *,
        interval: float | None = None,
    ) -> None:
        self.pools = pools
        self.identity = identity
        self.secrets = secrets
        self.progress = progress
        self.interval = parse_timedelta(config.resolve("campaign.publish-interval", interval))
        self.board_interval = parse_timedelta(config.get("campaign.terminal-interval"))
        self.line_length = int(config.get("campaign.traceback-line-length"))
        self.board = CampaignBoard()  # what the terminal shows; the page has its own
        self.errors: deque[dict[str, Any]] = deque(maxlen=int(config.get("campaign.latest-errors")))
        self._boarded = self._published = 0.0
        self.notice: str | None = None  # what the campaign waits for now (a database outage)
        self.error_watch = ErrorWatch(identity, secrets)  # a table's errors past the threshold: say so
        self.accounting: Accounting | None = None  # make() durations per table, for the page's histogram
        self.following: Callable[[], dict[str, Any]] | None = None  # a following campaign's Follower.state

    def record_errors(self, table: str, failed: Sequence[tuple[dict, str | None, str | None]]) -> None:
        """Keep the latest failures (key, message, the last lines of the traceback), masked."""
        for key, message, stack in list(failed)[-self.errors.maxlen :]:
            self.errors.append(
                {
                    "table": table,
                    "key": ", ".join(f"{k}={v}" for k, v in key.items()),
                    "message": redact(message or "", self.secrets)[:ERROR_MESSAGE_LENGTH],
                    "time": time.time(),
                    "traceback": redact(
                        "\n".join(line[: self.line_length] for line in (stack or "").rstrip().splitlines()[-10:]),
                        self.secrets,
                    ),
                }
            )

    def state(self, tables: Iterable[TableState], finished: bool = False, cancelled: bool = False) -> dict[str, Any]:
        """What the campaign publishes: see :class:`~djdask.monitor.progress.CampaignBoard`."""
        now = time.monotonic()
        return {
            "version": 1,
            "time": time.time(),
            "campaign": {**self.identity, "finished": finished, "cancelled": cancelled},
            "tables": [
                {
                    "table": t.summary.table,
                    "full_name": t.info.full_name,
                    "depth": t.info.depth,
                    "parents": t.parents,
                    "pool": t.pool.name if t.pool else None,
                    "rows": t.rows_before + t.summary.succeeded,
                    "rows_estimated": t.rows_estimated,
                    "made": t.summary.succeeded + t.summary.skipped,
                    "errors": t.summary.errors,
                    "in_flight": t.keys,
                    "pending": t.pending,
                    # A table with nothing left: its span ends at its last key, so that
                    # its average rate is not diluted by the rest of the campaign.
                    "seconds": (
                        t.summary.seconds
                        if t.summary.last_done is not None and not (t.pending or t.keys)
                        else now - t.started
                        if t.started
                        else 0.0
                    ),
                }
                for t in tables
            ],
            "errors": list(self.errors),
            # A database outage first; else what a pool's job watch found of jobs whose worker has not joined.
            "notice": self.notice
            or next((redact(p.notice, self.secrets) for p in self.pools if getattr(p, "notice", None)), None),
            # Only a database outage sets the publisher's own notice (notify): for /djdask/health.
            "database_reachable": self.notice is None,
            # How often it publishes: a state older than a few of these says the campaign is stuck or gone.
            "publish_interval": self.interval,
            # A following campaign (populate --follow): djdask.campaign.follow.Follower.state()
            "following": self.following() if self.following is not None else None,
        }

    def publish_history(self, records: list[dict[str, Any]]) -> None:
        """Recent campaigns of the pipeline (their records) for the page, on every pool's
        scheduler; called by the record keeper's thread."""
        history = [history_entry(r) for r in records]
        for pool in self.pools:
            client = pool.client
            if client is None or client.status != "running":
                continue
            try:
                client.sync(
                    client.scheduler.set_metadata,
                    keys=[HISTORY_KEY],
                    value=redact_value(history, self.secrets),
                    callback_timeout=5,
                )
            except Exception as err:  # the page misses the history; the campaign goes on
                logger.debug("Could not publish the campaign history to pool %s: %s", pool.name, err)

    def notify(self, tables: Iterable[TableState], notice: str | None) -> None:
        """Show what the campaign waits for (None: nothing any more) on its page, at once."""
        self.notice = redact(notice, self.secrets) if notice else None
        self.report(tables, at_once=True)

    def report(
        self, tables: Iterable[TableState], finished: bool = False, cancelled: bool = False, *, at_once: bool = False
    ) -> None:
        """Progress to the terminal and, every publish interval (or ``at_once``), the state to
        the schedulers."""
        now = time.monotonic()
        if at_once:
            self._boarded = self._published = 0.0
        if not finished and now - self._boarded < self.board_interval:
            return
        self._boarded = now
        for t in tables:
            self.error_watch.see(t.summary.table, t.summary.errors)
        state = self.state(tables, finished, cancelled)
        self.board.update(state)
        if not finished:
            self.progress.update(self.board.rows())
        if finished or now - self._published >= self.interval:
            self._published = now
            if self.accounting is not None:  # for the page only: not at every terminal redraw
                for row in state["tables"]:
                    row["durations"] = self.accounting.histogram(row["table"])
            for pool in self.pools:
                self.publish(pool, state, wait=finished)

    def publish(self, pool: Pool, state: dict[str, Any], *, wait: bool) -> None:
        """Send the state to a pool's scheduler for its campaign page.

        The loop does not wait for the answer (a scheduler that is gone or far
        away would hold up claiming and completing for the connect timeout);
        while one publish is unanswered, only the newest state waits to be sent after it
        (a notice shown while the loop waits for the database must reach the page).  The final
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
        with pool.publish_lock:
            if pool.publishing:  # the newest state goes once the one in flight is answered
                pool.unsent = state
                return
            pool.publishing = True

        async def send(state: dict[str, Any] | None) -> None:
            while state is not None:
                try:
                    await client.scheduler.set_metadata(keys=[METADATA_KEY], value=state)
                except Exception as err:  # the page misses an update; the campaign goes on
                    logger.debug("Could not publish the campaign state to pool %s: %s", pool.name, err)
                with pool.publish_lock:
                    state, pool.unsent = pool.unsent, None
                    pool.publishing = state is not None

        client.loop.add_callback(send, state)


def history_entry(record: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a campaign record: plain values, no duration histograms."""
    account = dict(record.get("accounting") or {})
    account["tables"] = [{k: v for k, v in t.items() if k != "durations"} for t in account.get("tables") or []]
    # The records' times are UTC (djdask.db.clock): the page says so beside each.
    entry = {
        k: (utc_text(v, zone=" UTC") if isinstance(v, datetime.datetime) else v)
        for k, v in record.items()
        if k != "accounting"
    }
    return {**entry, "accounting": account}


def redact_value(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON-like) with every known secret masked in its strings."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_value(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    return value
