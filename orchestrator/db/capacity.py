"""How many workers the database server can take: one connection each.

Each worker process holds one database connection (DataJoint's, for its
``make()`` calls) and the campaign holds :data:`OWN_CONNECTIONS` of its own (its
queries, the heartbeat, the campaign record).  A campaign whose workers would
need more connections than the server has free would see its last workers fail
to connect, one error per key.  Before it starts, the campaign reads the
server's ``max_connections`` and the connections in use, and caps each pool's
workers to its share of what is free, saying so and how to lift the cap; when
not even one worker per pool fits, it stops with exit 2 before anything is
written.

Pools whose workers djdask does not start (``address``, ``scheduler-file``) are
not counted: their workers are there already.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from djdask.config import namespace as config
from djdask.errors import DjdaskError

__all__ = ["OWN_CONNECTIONS", "Budget", "budget", "check", "fit", "planned_workers"]

logger = logging.getLogger(__name__)

#: Connections a campaign holds besides its workers': its own queries, the heartbeat, the record keeper.
OWN_CONNECTIONS = 3


@dataclass(frozen=True)
class Budget:
    """A server's connections: ``limit`` (max_connections), ``reserved`` (kept for
    superusers, not ours to use), ``in_use`` now, this campaign's one included."""

    backend: str
    limit: int
    reserved: int
    in_use: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.reserved - self.in_use)


def budget(connection: Any) -> Budget | None:
    """The server's connection budget, or None when it cannot be read (then there is no guard)."""
    backend = connection.adapter.backend
    try:
        if backend == "postgresql":
            limit = int(connection.query("SHOW max_connections").fetchone()[0])
            superuser = bool(
                connection.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
            )
            reserved = 0 if superuser else int(connection.query("SHOW superuser_reserved_connections").fetchone()[0])
            in_use = int(
                connection.query(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                ).fetchone()[0]
            )
        else:
            limit = int(connection.query("SELECT @@max_connections").fetchone()[0])
            reserved = 0
            in_use = int(connection.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'").fetchone()[1])
    except Exception as err:  # a server or user that does not say: run without the guard
        logger.debug("Could not read the server's connection limit: %s", err)
        return None
    return Budget(backend, limit, reserved, in_use)


def planned_workers(pools: Any, workers: int | None) -> dict[str, int]:
    """The most worker processes each pool of ``pools`` (:class:`djdask.campaign.pools.Pools`) would
    start: ``workers`` (or the cores here) on a local pool, ``max-jobs`` x processes per job
    on a batch pool, ``max-workers`` on Kubernetes, the database side of a pool without
    database access.  Pools of running schedulers are left out."""
    planned: dict[str, int] = {}
    if getattr(pools, "client", None) is not None:  # a client given to the campaign: its workers are there
        return planned
    for pool in pools:
        profile = pool.profile
        kind = profile.kind if profile is not None else None
        if pool.without_database:  # its workers hold no connection; its database side does
            planned[pool.name] = pool.database_workers
        elif kind is None or kind.name == "local":
            planned[pool.name] = int(pool.local_workers(workers) or os.cpu_count() or 1)
        elif hasattr(kind, "submit_command"):  # a batch system (dask-jobqueue)
            settings = kind.settings(profile.name, profile.raw)
            jobs = int(profile.raw.get("max-jobs", config.get("cluster-defaults.max-jobs")))
            planned[pool.name] = jobs * int(settings.get("processes") or 1)
        elif kind.name == "kubernetes":
            planned[pool.name] = int(profile.raw.get("max-workers", config.get("cluster-defaults.max-workers")))
    return planned


def fit(planned: dict[str, int], free: int) -> dict[str, int]:
    """Each pool's cap when ``planned`` workers must fit in ``free`` connections, the
    campaign's own :data:`OWN_CONNECTIONS` first: pools that fit keep their number; else each
    gets its share of what is left, in proportion to its plan (at least one).  Raise
    ValueError when not even one worker per pool fits."""
    room = free - OWN_CONNECTIONS
    total = sum(planned.values())
    if total <= room:
        return dict(planned)
    if room < len(planned):
        raise ValueError(room)
    caps = {name: max(1, room * n // total) for name, n in planned.items()}
    # What the rounding left goes to the largest plans, never past them or past the room.
    spare = room - sum(caps.values())
    for name in sorted(planned, key=planned.get, reverse=True):
        if spare <= 0:
            break
        extra = min(spare, planned[name] - caps[name])
        caps[name] += extra
        spare -= extra
    return caps


def _raise_limit(backend: str, limit: int) -> str:
    if backend == "postgresql":
        return f"raise max_connections in postgresql.conf (now {limit}) and restart the server"
    return f"raise the server's max_connections (now {limit}): SET GLOBAL max_connections = {limit * 2}"


def check(connection: Any, pools: Any, workers: int | None) -> dict[str, int]:
    """The workers each pool may start (``planned_workers`` capped by the server's free
    connections); a warning when capped; DjdaskError when not one worker per pool fits."""
    planned = planned_workers(pools, workers)
    found = budget(connection) if planned else None
    if found is None:
        return planned
    # The campaign's own first connection is already counted in use.
    free = found.free + 1
    reserved = f", {found.reserved} kept for superusers" if found.reserved else ""
    said = (
        f"The database server takes {found.limit} connections ({found.in_use} in use{reserved}): "
        f"{max(0, free)} are free for this campaign, which needs one per worker plus {OWN_CONNECTIONS} of its own"
    )
    try:
        caps = fit(planned, free)
    except ValueError:
        raise DjdaskError(
            f"{said}, so not even one worker per pool fits. Close other sessions (other campaigns, idle "
            f"notebooks), or {_raise_limit(found.backend, found.limit)}. Nothing was started."
        ) from None
    if caps != planned:
        capped = ", ".join(f"{name} {planned[name]} -> {caps[name]}" for name in planned if caps[name] != planned[name])
        fewer = sum(caps.values())
        logger.warning(
            "%s; %d worker(s) planned, so they are capped (%s). To run them all, %s, or close other sessions; "
            "to be told nothing, ask for at most %d worker(s).",
            said,
            sum(planned.values()),
            capped,
            _raise_limit(found.backend, found.limit),
            fewer,
        )
    return caps
