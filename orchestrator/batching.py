"""Batch sizes that adapt, per table, toward a target task duration.

Millisecond ``make()`` calls go to Dask in batches of hundreds, so that the
scheduler is not drowned in tiny tasks; hour-long ones go one per task.  The
estimate of a key's cost is an exponentially weighted mean of the durations
workers report; until one is seen, batches have one key.
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
        Weight of a new batch's mean duration in the running estimate.
    """

    def __init__(self, target: float, max_size: int, smoothing: float = 0.3) -> None:
        if target <= 0:
            raise ValueError(f"target duration must be positive, got {target}")
        self.target = target
        self.max_size = max(1, int(max_size))
        self.smoothing = smoothing
        self.per_key: float | None = None

    def observe(self, durations: list[float]) -> None:
        """Fold the per-key durations of one finished batch into the estimate."""
        if not durations:
            return
        mean = sum(durations) / len(durations)
        if self.per_key is None:
            self.per_key = mean
        else:
            self.per_key += self.smoothing * (mean - self.per_key)

    def size(self, *, pending: int | None = None, slots: int = 1) -> int:
        """Keys for the next batch: toward ``target`` seconds, spread over ``slots`` free
        task slots when fewer keys are pending than a full batch each."""
        if self.per_key is None:
            size = 1
        else:
            size = int(self.target / max(self.per_key, 1e-6))
        size = max(1, min(self.max_size, size))
        if pending is not None and pending > 0:
            size = min(size, max(1, math.ceil(pending / max(1, slots))))
        return size
