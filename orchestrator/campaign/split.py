"""Pools without database access: the database side, the refusal, the three tasks of a batch.

A profile with ``database: none`` starts workers that hold no connection and no
credential (:mod:`djdask.clusters.batch` keeps them out of its jobs).  Its tables'
keys run as three tasks on the pool's one scheduler (:mod:`djdask.worker.split`):
``make_fetch`` and the insert on the **database side**, worker processes this host
starts and joins to that scheduler (``database-workers`` of them, 2 by default,
offering the resource ``djdask-database``), and ``make_compute`` on the pool's own
workers (resource ``djdask-compute``).  Dask moves the fetched data and the results
between them, worker to worker.  Only a table whose make() is DataJoint's tripartite
one can be split; any other routed there is refused before anything is written.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dask.config
from dask.utils import parse_bytes

from djdask import djcompat
from djdask.clusters import worker_environment
from djdask.config import namespace as config
from djdask.errors import DjdaskError
from djdask.worker.split import COMPUTE_RESOURCE, DATABASE_RESOURCE, compute_batch, fetch_batch, insert_batch

__all__ = [
    "DATABASE_SIDE_PREFIX",
    "check_splittable",
    "close_database_side",
    "database_workers",
    "max_transfer",
    "start_database_side",
    "submit_split",
]

logger = logging.getLogger(__name__)

#: The names of the database-side workers (``djdask-database-0``, ...).
DATABASE_SIDE_PREFIX = "djdask-database-"


def database_workers(profile: Any) -> int:
    """How many database-side workers a pool without database access gets (``database-workers``, 2)."""
    value = profile.raw.get("database-workers", 2)
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise DjdaskError(
            f"Profile {profile.name!r} has database-workers {value!r}: write how many worker processes on this "
            "host fetch and insert for its workers without database access, a whole number of at least 1."
        )
    return count


def check_splittable(class_name: str, cls: type, pool_name: str, profile_name: str) -> None:
    """Refuse a table routed to a pool without database access whose make() cannot be split."""
    if djcompat.is_splittable(cls):
        return
    raise DjdaskError(
        f"Table {class_name} is routed to pool {pool_name!r} (profile {profile_name!r}), whose workers have no "
        f"database access (`database: none`), but its make() cannot run there: it is a `make(key)` of its own, "
        "which reads, computes and writes in one call. Write it as `make_fetch(key)` (reads), "
        "`make_compute(key, *fetched)` (computes, without the database) and `make_insert(key, *computed)` "
        f"(writes), or route {class_name} to a pool with database access "
        f"(`djdask.campaign.pools.{class_name}`). Nothing was written."
    )


def max_transfer() -> int:
    """The most bytes of fetched data or results one key may send across (``djdask.campaign.max-transfer``)."""
    return int(parse_bytes(str(config.get("campaign.max-transfer"))))


def start_database_side(pool: Any, count: int) -> list[Any]:
    """Start ``count`` database-side worker processes on this host, joined to ``pool``'s
    scheduler (its security too), each offering ``djdask-database``; return their nannies."""
    # lazy: distributed's Nanny, only for a pool without database access
    from distributed import Nanny

    address = pool.client.scheduler.address
    security = getattr(pool.cluster, "security", None)
    environment = worker_environment()

    async def start() -> list[Any]:
        nannies = [
            Nanny(
                address,
                nthreads=1,
                resources={DATABASE_RESOURCE: 1},
                name=f"{DATABASE_SIDE_PREFIX}{i}",
                security=security,
                memory_limit=config.get("campaign.worker-memory"),
                env=environment,
                silence_logs=logging.ERROR,
            )
            for i in range(count)
        ]
        await asyncio.gather(*nannies)
        return nannies

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        nannies = pool.client.sync(start)
    if pool.demand is not None:
        pool.demand.keep = {n.name for n in nannies}  # not for adaptive scaling to retire
    logger.info(
        "Pool %s has no database access: %d database-side worker(s) on this host fetch and insert its keys",
        pool.name,
        count,
    )
    return nannies


def close_database_side(pool: Any) -> None:
    """Close the database-side workers of ``pool`` (before its cluster)."""
    nannies = getattr(pool, "database_side", None) or []
    if not nannies:
        return

    async def close() -> None:
        await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)

    try:
        pool.client.sync(close)
    except Exception as err:  # the scheduler is gone already: the processes end with this one
        logger.debug("Pool %s: database-side workers not closed: %s", pool.name, err)
    pool.database_side = []


def submit_split(
    client: Any, state: Any, keys: list[dict], make_kwargs: dict | None, version: str | None, tolerance: float
) -> Any:
    """Submit one batch of a split table as its three tasks; the future of the last (the
    outcomes).  Fetched data and results go between workers as Dask data."""
    name, limit, priority = state.info.full_name, max_transfer(), state.info.depth
    database = {"resources": {DATABASE_RESOURCE: 1}}
    compute = {"resources": {COMPUTE_RESOURCE: 1, **(state.resources or {})}}
    fetched = client.submit(
        fetch_batch, name, keys, make_kwargs, limit, tolerance, pure=False, priority=priority, **database
    )
    computed = client.submit(compute_batch, name, fetched, limit, pure=False, priority=priority, **compute)
    return client.submit(
        insert_batch,
        name,
        computed,
        make_kwargs,
        version,
        tolerance,
        pure=False,
        priority=priority + 1,
        **database,
    )
