"""Batch sizes that adapt, per table, toward a target task duration.

Millisecond ``make()`` calls go to Dask in batches of hundreds, so that the
scheduler is not drowned in tiny tasks; hour-long ones go one per task.  The
estimate of a key's cost is an exponentially weighted mean, per key, of the
durations workers report; until one is seen, batches have one key.

Toward the end of a table's keys, batches shrink to an equal share of the
pending keys per task slot (guided self-scheduling), down to a tenth of the
target duration: the last tasks are short and end together, instead of one
worker finishing a long batch alone while the others wait.
"""

from __future__ import annotations

import math

__all__ = ["BatchSizer"]


class BatchSizer:
    """Per-table batch size from observed ``make()`` durations.

    Parameters
    ----------
    target : float
        Seconds one Dask task should take.
    max_size : int
        Upper bound on keys per task.
    smoothing : float
        Weight of one key's duration in the running estimate: a batch of ``n``
        keys moves it as ``n`` observations would, so that a large batch soon
        outweighs the first key's (often slow: imports, cold caches) duration.
    """

    def __init__(self, target: float, max_size: int, smoothing: float = 0.3) -> None:
        if target <= 0:
            raise ValueError(f"target duration must be positive, got {target}")
        self.target = target
        self.max_size = max(1, int(max_size))
        self.smoothing = smoothing
        self.per_key: float | None = None
        self.slots = 1  # the most task slots seen free at once: the table's share of the workers

    def observe(self, durations: list[float]) -> None:
        """Fold the per-key durations of one finished batch into the estimate."""
        if not durations:
            return
        mean = sum(durations) / len(durations)
        if self.per_key is None:
            self.per_key = mean
        else:
            weight = 1.0 - (1.0 - self.smoothing) ** len(durations)
            self.per_key += weight * (mean - self.per_key)

    def size(self, *, pending: int | None = None, slots: int = 1) -> int:
        """Keys for the next batch: toward ``target`` seconds, and at most an equal share
        of the ``pending`` keys per task slot.

        ``slots`` is the number of task slots free now; the share is taken over the
        most slots seen free at once, so that batches shrink as the table's last
        keys are handed out, one slot at a time.
        """
        self.slots = max(self.slots, int(slots))
        if self.per_key is None:
            size = 1
        else:
            size = int(self.target / max(self.per_key, 1e-6))
        size = max(1, min(self.max_size, size))
        if pending is not None and pending > 0:
            share = math.ceil(pending / self.slots)
            if self.per_key is not None:
                # A share shorter than a tenth of the target costs more in scheduling and
                # bookkeeping (tens of ms a task) than it saves at the end.
                share = max(share, int(self.target / 10 / max(self.per_key, 1e-6)))
            size = min(size, max(1, share), pending)
        return size
