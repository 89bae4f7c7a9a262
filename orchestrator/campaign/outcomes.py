"""What a finished batch came to, and what to do about its keys: pure, no database.

A batch comes back from a worker as one outcome per key (see
:func:`djdask.worker.executor.run_batch`); a task that failed as a whole (its worker
died) is :mod:`djdask.campaign.losses`'s to judge.  :func:`classify` sorts the outcomes into keys done
(made, or found already made), failed (``make()`` raised: an error row at
once), transient (a lost connection or worker, a timeout: worth another try)
and requeued (not started because the worker retires: another worker takes
them, no attempt charged).  :class:`RetryPolicy` decides which transient keys
are tried again, after how long, and which have used up their attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dask.utils import parse_timedelta

from djdask.config import namespace as config

__all__ = ["Classified", "Decision", "RetryPolicy", "classify"]

#: One key's failure: (key, error message, error stack or None).
Failure = tuple[dict, str, "str | None"]


@dataclass
class Classified:
    """A batch's outcomes by what happens next."""

    done: list[dict] = field(default_factory=list)  # outcomes of keys made or already made
    failed: list[Failure] = field(default_factory=list)
    transient: list[dict] = field(default_factory=list)  # outcomes worth another attempt
    requeue: list[dict] = field(default_factory=list)  # keys not started: their worker retires

    @property
    def made(self) -> list[dict]:
        """Keys now in the table: what their children's keys wait for."""
        return [o["key"] for o in self.done]

    @property
    def succeeded(self) -> int:
        return sum(1 for o in self.done if o["status"] == "success")

    @property
    def skipped(self) -> int:
        return sum(1 for o in self.done if o["status"] == "skipped")


def classify(outcomes: Sequence[dict[str, Any]]) -> Classified:
    """Sort one batch's outcomes (dicts with ``key``, ``status``, ``duration``,
    ``error_message``, ``error_stack``) by what happens next."""
    out = Classified()
    for outcome in outcomes:
        status = outcome["status"]
        if status in ("success", "skipped"):
            out.done.append(outcome)
        elif status == "requeue":
            out.requeue.append(outcome["key"])
        elif status == "error":
            out.failed.append((outcome["key"], outcome["error_message"], outcome["error_stack"]))
        else:
            out.transient.append(outcome)
    return out


@dataclass
class Decision:
    """What to do with a batch's transient keys."""

    retry: list[dict] = field(default_factory=list)  # keys to try again ...
    attempt: int = 0  # ... as this attempt ...
    wait: float = 0.0  # ... after this many seconds
    failed: list[Failure] = field(default_factory=list)  # keys out of attempts: error rows


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures are retried with exponential backoff, up to ``max_attempts``
    attempts in all; only keys that were running (or queued on a lost worker) are charged.

    Parameters
    ----------
    max_attempts : int
        Attempts per key, the first included.
    backoff : float
        Seconds before the second attempt; doubled for each one after.
    """

    max_attempts: int
    backoff: float

    @classmethod
    def from_config(cls, max_attempts: int | None = None, backoff: str | float | None = None) -> RetryPolicy:
        """Explicit arguments win over ``djdask.campaign.max-attempts`` and ``retry-backoff``."""
        attempts = config.resolve("campaign.max-attempts", max_attempts)
        return cls(int(attempts), float(parse_timedelta(config.resolve("campaign.retry-backoff", backoff))))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2, 3, ...)."""
        return self.backoff * 2 ** (attempt - 2)

    def decide(self, attempt: int, transient: Sequence[dict[str, Any]]) -> Decision:
        """For transient outcomes of a batch's ``attempt``: retry them, or fail them for good."""
        if not transient:
            return Decision()
        if attempt < self.max_attempts:
            return Decision(retry=[o["key"] for o in transient], attempt=attempt + 1, wait=self.delay(attempt + 1))
        # The message stays what DataJoint's populate() writes for the error; the attempts
        # are djdask's own account, so they go at the end of the stack.
        note = f"djdask: gave up after {attempt} attempts, each failed transiently (djdask.campaign.max-attempts)"
        return Decision(
            failed=[
                (o["key"], o["error_message"], f"{o['error_stack'].rstrip()}\n\n{note}" if o["error_stack"] else note)
                for o in transient
            ]
        )
