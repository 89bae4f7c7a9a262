"""What a campaign cost, per table and per pool.

Per table: keys made, errors, retries, the worker-seconds its ``make()`` calls
took (busy), their duration distribution (min, p50, p95, max), and the peak
memory of the workers that ran them.  Per pool: worker-seconds present,
busy and idle, peak worker memory, and for a batch pool the jobs it submitted
and the node-hours they requested (jobs x walltime).

Durations go into a log-binned histogram (:class:`Durations`, bins 5% wide),
so that percentiles cost the same memory for ten keys or ten million and the
histograms of several controllers of one campaign (``--resubmit``) add up.
The campaign keeps the accounting in its record (:mod:`djdask.records.records`) while it
runs and when it ends; ``djdask report`` prints it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Accounting", "Durations", "by_name"]

#: Width of one histogram bin, as a ratio: percentiles are exact within 5%.
RATIO = 1.05
#: The lower edge of bin 0, in seconds; shorter durations fall into it.
FLOOR = 1e-4


@dataclass
class Durations:
    """A log-binned histogram of durations in seconds, with exact count, sum, min and max."""

    count: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None
    bins: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def bin_of(seconds: float) -> int:
        return max(0, int(math.log(max(seconds, FLOOR) / FLOOR) / math.log(RATIO)))

    def add(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.count += 1
        self.total += seconds
        self.low = seconds if self.low is None else min(self.low, seconds)
        self.high = seconds if self.high is None else max(self.high, seconds)
        b = self.bin_of(seconds)
        self.bins[b] = self.bins.get(b, 0) + 1

    def merge(self, other: Durations) -> None:
        self.count += other.count
        self.total += other.total
        for mine, theirs, pick in (("low", other.low, min), ("high", other.high, max)):
            if theirs is not None:
                ours = getattr(self, mine)
                setattr(self, mine, theirs if ours is None else pick(ours, theirs))
        for b, n in other.bins.items():
            self.bins[b] = self.bins.get(b, 0) + n

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1): the middle of the bin holding it, kept within min and max."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for b in sorted(self.bins):
            seen += self.bins[b]
            if seen > rank:
                middle = FLOOR * RATIO ** (b + 0.5)
                return min(max(middle, self.low or 0.0), self.high or middle)
        return self.high

    def summary(self) -> dict[str, Any]:
        """``count``, ``min``, ``p50``, ``p95``, ``max``, ``mean`` (seconds, rounded)."""

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "count": self.count,
            "min": r(self.low),
            "p50": r(self.quantile(0.5)),
            "p95": r(self.quantile(0.95)),
            "max": r(self.high),
            "mean": r(self.total / self.count) if self.count else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total": self.total,
            "min": self.low,
            "max": self.high,
            "bins": {str(b): n for b, n in sorted(self.bins.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Durations:
        data = data or {}
        return cls(
            int(data.get("count") or 0),
            float(data.get("total") or 0.0),
            data.get("min"),
            data.get("max"),
            {int(b): int(n) for b, n in (data.get("bins") or {}).items()},
        )

    def histogram(self) -> list[tuple[float, float, int]]:
        """``(from, to, count)`` per non-empty bin, in seconds: the distribution to plot."""
        return [(FLOOR * RATIO**b, FLOOR * RATIO ** (b + 1), n) for b, n in sorted(self.bins.items())]


@dataclass
class _Table:
    busy: float = 0.0  # worker-seconds in make()
    peak_memory: int = 0
    durations: Durations = field(default_factory=Durations)


@dataclass
class _Pool:
    busy: float = 0.0
    peak_memory: int = 0


class Accounting:
    """The accounting of one campaign (and of the controllers before it, ``earlier``).

    :meth:`batch` takes each finished batch's outcomes (their ``duration`` and the
    worker's ``memory`` peak, :func:`~djdask.worker.executor.peak_memory`);
    :meth:`snapshot` adds the tables' counts and the pools' worker-seconds and jobs,
    as kept in the campaign record.
    """

    def __init__(self, earlier: Mapping[str, Any] | None = None) -> None:
        self.tables: dict[str, _Table] = {}
        self.pools: dict[str, _Pool] = {}
        self.earlier = dict(earlier or {})
        self._lock = threading.Lock()  # the campaign's record keeper snapshots from its own thread

    def batch(self, table: str, pool: str, outcomes: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self._batch(table, pool, outcomes)

    def _batch(self, table: str, pool: str, outcomes: Iterable[Mapping[str, Any]]) -> None:
        t = self.tables.setdefault(table, _Table())
        p = self.pools.setdefault(pool, _Pool())
        for o in outcomes:
            duration = o.get("duration")
            if duration is not None:
                t.busy += float(duration)
                p.busy += float(duration)
                if o.get("status") == "success":
                    t.durations.add(duration)
            memory = int(o.get("memory") or 0)
            t.peak_memory = max(t.peak_memory, memory)
            p.peak_memory = max(p.peak_memory, memory)

    def histogram(self, table: str) -> list[list[float]]:
        """This controller's make() durations of ``table``: ``[from, to, count]`` per bin (seconds)."""
        with self._lock:
            t = self.tables.get(table)
            return [[round(a, 6), round(b, 6), n] for a, b, n in t.durations.histogram()] if t else []

    def snapshot(self, summaries: Iterable[Any], pools: Iterable[Any], seconds: float) -> dict[str, Any]:
        """The accounting as JSON-ready data, added to what earlier controllers recorded.

        ``summaries``: :class:`~djdask.campaign.loop.TableSummary` of each table; ``pools``:
        :class:`~djdask.campaign.pools.Pool` objects (their ``worker_seconds``, ``demand`` and profile).
        """
        with self._lock:
            return self._snapshot(list(summaries), list(pools), seconds)

    def _snapshot(self, summaries: list[Any], pools: list[Any], seconds: float) -> dict[str, Any]:
        before_tables = by_name(self.earlier.get("tables"), "table")
        tables = {}
        for s in summaries:
            t = self.tables.get(s.table, _Table())
            old = before_tables.get(s.table) or {}
            durations = Durations.from_dict(old.get("durations"))
            durations.merge(t.durations)
            tables[s.table] = {
                "table": s.table,
                "made": s.succeeded + int(old.get("made") or 0),
                "skipped": s.skipped + int(old.get("skipped") or 0),
                "errors": s.errors + int(old.get("errors") or 0),
                "retries": s.retries + int(old.get("retries") or 0),
                "busy_seconds": round(t.busy + float(old.get("busy_seconds") or 0.0), 3),
                "peak_memory": max(t.peak_memory, int(old.get("peak_memory") or 0)),
                "make_seconds": durations.summary(),
                "durations": durations.as_dict(),
            }
        for name, old in before_tables.items():  # tables this controller did not run
            tables.setdefault(name, old)
        before_pools = by_name(self.earlier.get("pools"), "pool")
        out_pools = {}
        for pool in pools:
            p = self.pools.get(pool.name, _Pool())
            old = before_pools.get(pool.name) or {}
            present = float(getattr(pool, "worker_seconds", 0.0)) + float(old.get("worker_seconds") or 0.0)
            if getattr(pool, "sized_at", None) is not None:  # the workers present since the last sizing
                present += pool.workers * (time.monotonic() - pool.sized_at)
            busy = p.busy + float(old.get("busy_seconds") or 0.0)
            entry: dict[str, Any] = {
                "pool": pool.name,
                "profile": getattr(pool.profile, "name", None) or "local",
                "worker_seconds": round(present, 3),
                "busy_seconds": round(busy, 3),
                "idle_seconds": round(max(0.0, present - busy), 3),
                "peak_memory": max(p.peak_memory, int(old.get("peak_memory") or 0)),
            }
            if pool.demand is not None:
                jobs = pool.demand.submitted + int(old.get("jobs_submitted") or 0)
                walltime = walltime_seconds(pool.profile)
                entry["jobs_submitted"] = jobs
                entry["node_hours_requested"] = (
                    round(pool.demand.submitted * walltime / 3600 + float(old.get("node_hours_requested") or 0.0), 3)
                    if walltime
                    else None
                )
            out_pools[pool.name] = entry
        for name, old in before_pools.items():
            out_pools.setdefault(name, old)
        return {
            "seconds": round(seconds + float(self.earlier.get("seconds") or 0.0), 3),
            "controllers": int(self.earlier.get("controllers") or 0) + 1,
            "made": sum(t["made"] for t in tables.values()),
            "errors": sum(t["errors"] for t in tables.values()),
            "tables": list(tables.values()),  # in the campaign's order (a list: JSON objects may be re-sorted)
            "pools": list(out_pools.values()),
        }


def by_name(entries: Iterable[Mapping[str, Any]] | None, key: str) -> dict[str, Mapping[str, Any]]:
    """An accounting's ``tables`` (``key="table"``) or ``pools`` (``key="pool"``) by name."""
    return {entry[key]: entry for entry in entries or []}


def walltime_seconds(profile: Any) -> float | None:
    """A batch profile's job walltime in seconds (its own, or its jobqueue section's), if it has one."""
    kind = getattr(profile, "kind", None)
    if not hasattr(kind, "walltime_seconds"):
        return None
    try:
        walltime = kind.settings(profile.name, profile.raw).get("walltime")
    except Exception:  # the profile was checked when its pool started
        return None
    return float(kind.walltime_seconds(walltime)) if walltime else None
