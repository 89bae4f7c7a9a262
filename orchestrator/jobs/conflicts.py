"""Lock conflicts on jobs tables: what they look like, and running a statement again after one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["is_conflict", "retry_on_conflict"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def is_conflict(err: BaseException) -> bool:
    """Whether the database refused a statement for a lock conflict: a deadlock, a
    serialization failure or a lock-wait timeout (the statement may simply run again)."""
    text = f"{type(err).__name__} {err}".lower()
    return "deadlock" in text or "could not serialize" in text or "lock wait timeout" in text


def retry_on_conflict(fn: Callable[[], T], *, attempts: int = 5) -> T:
    """Run ``fn``; when the database reports a deadlock or serialization failure, retry.

    The statements djdask runs on jobs tables are short and idempotent, and
    the heartbeat's renewals can meet a batch completion on the same rows.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:
            if attempt + 1 == attempts or not is_conflict(err):
                raise
            logger.debug("Retrying after a lock conflict: %s", err)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
