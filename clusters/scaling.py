"""Scaling a pool of batch-job workers to the work a campaign has.

Dask's own adaptive scaling sizes a cluster from the tasks the scheduler
holds.  A campaign keeps its queue in the database's jobs tables and gives the
scheduler only a small window of tasks per worker, so the scheduler alone would
never ask for more workers than it already has.  :class:`Demand` is where the
campaign says how many worker processes its pending and running keys could use;
:class:`DemandAdaptive` is distributed's :class:`~distributed.deploy.Adaptive`
(its interval, hysteresis, minimum and maximum, and its choice of idle workers
to retire) with that number as its target.
"""

from __future__ import annotations

from typing import Any

from distributed.deploy import Adaptive

__all__ = ["Demand", "DemandAdaptive"]


class Demand:
    """Between a campaign and a pool that scales: ``workers``, the worker processes the
    campaign could keep busy now (pending plus running keys), set by the campaign;
    ``cap``, the most workers the database can take (:mod:`djdask.db.capacity`);
    ``submitted`` and ``submit_errors``, jobs the batch system took or refused, set by
    the pool; ``jobs``, the jobs taken, by the cluster's name for them; ``findings``,
    what :class:`~djdask.clusters.jobwatch.JobWatch` found of jobs whose worker has not
    joined, for the campaign to say, and ``fatal`` when the pool cannot start at all."""

    def __init__(self, cap: int | None = None) -> None:
        self.workers = 0
        self.cap = cap  # the most workers the database server has connections for
        self.submitted = 0
        self.submit_errors: list[str] = []
        self.jobs: dict[str, Any] = {}  # name -> djdask.clusters.jobwatch.SubmittedJob
        self.findings: list[str] = []
        self.fatal: str | None = None
        self.watch: Any = None  # the pool's JobWatch, stopped with the pool
        self.keep: set[str] = set()  # workers of the scheduler that are not the pool's (its database side)

    @property
    def wanted(self) -> int:
        """The workers to scale to: ``workers``, at most ``cap``."""
        return int(self.workers) if self.cap is None else min(int(self.workers), self.cap)

    def __repr__(self) -> str:
        return f"Demand(workers={self.workers}, submitted={self.submitted}, refused={len(self.submit_errors)})"


class DemandAdaptive(Adaptive):
    """Adaptive scaling toward ``demand.workers``, within ``minimum`` and ``maximum``."""

    def __init__(self, cluster=None, *, demand: Demand, **kwargs) -> None:
        self.demand = demand
        super().__init__(cluster, **kwargs)

    async def target(self) -> int:
        return self.demand.wanted

    async def workers_to_close(self, target: int) -> list[str]:
        """Idle workers to retire toward ``target``, never those in ``demand.keep`` (the
        database side of a pool without database access, which the campaign started here)."""
        keep = self.demand.keep
        if not keep:
            return await super().workers_to_close(target)
        return [name for name in await super().workers_to_close(target + len(keep)) if name not in keep]
