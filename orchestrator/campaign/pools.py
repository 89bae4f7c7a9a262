"""The pools of workers a campaign runs on.

A campaign runs on one pool (a LocalCluster, a given client, or a cluster
profile's workers) or on several (``cluster={"default": "slurm", "gpu":
"gpu-profile"}``).  Each table goes to the pool ``djdask.campaign.pools``
names for it, else to a pool whose profile offers the resources the table
declares, else to ``default``.  :class:`Pools` starts them, sizes their task
windows to the workers present, tells scaling pools how many workers their
keys could use, stops a campaign whose batch system refuses every job, and
closes what it started.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dask.config
from distributed import Client

from djdask.campaign.losses import MEMORY_TOPIC, Losses
from djdask.campaign.split import close_database_side, database_workers, start_database_side
from djdask.clusters import local_cluster, resolve, without_database
from djdask.clusters.scaling import Demand
from djdask.config import namespace as config
from djdask.db.outage import OUTAGE_TOPIC
from djdask.errors import DjdaskError, ProfileError
from djdask.monitor.links import Links, links_to, login_host, served_at
from djdask.worker.executor import PLUGIN_NAME
from djdask.worker.split import DATABASE_RESOURCE
from djdask.worker.watchdog import TOPIC, WatchdogPlugin

if TYPE_CHECKING:
    from djdask.campaign.tables import TableState

__all__ = ["Pool", "Pools", "covers", "resources_of"]

logger = logging.getLogger(__name__)


@dataclass
class Pool:
    """A pool of workers: a profile's cluster (or the LocalCluster, or a given client)."""

    name: str
    profile: Any = None  # djdask.clusters.Profile, or None for the LocalCluster / a given client
    client: Any = None
    cluster: Any = None  # None when the workers are not the campaign's to stop
    demand: Any = None  # djdask.clusters.scaling.Demand
    capacity: int = 0  # tasks in flight at most: workers x window
    tasks: int = 0  # tasks in flight
    links: Links = field(default_factory=Links)  # where its scheduler's web server answers (djdask.monitor.links)
    cap: int | None = None  # the most workers the database has connections for (djdask.db.capacity)
    workers: int = 0  # worker processes present at the last sizing
    worker_seconds: float = 0.0  # workers present x time, for the accounting
    sized_at: float | None = None
    findings_said: int = 0  # of its job watch's findings, those said
    notice: str | None = None  # the last of them, shown on the page until a worker joins
    publishing: bool = False  # a state sent to its scheduler, not yet answered
    unsent: dict[str, Any] | None = None  # the newest state, to send once that one is answered
    publish_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    busy_at: float = 0.0  # time.monotonic() when its keys last wanted workers
    database_side: list[Any] = field(default_factory=list)  # nannies on this host (djdask.campaign.split)

    @property
    def without_database(self) -> bool:
        """Whether its workers have no database access (its profile says ``database: none``)."""
        return self.profile is not None and without_database(self.profile.raw)

    @property
    def database_workers(self) -> int:
        """The database-side workers of a pool without database access, at most its cap."""
        count = database_workers(self.profile)
        return count if self.cap is None else max(1, min(count, self.cap))

    def local_workers(self, workers: int | None) -> int | None:
        """The workers of a local pool: ``--workers`` for the default pool, else its profile's
        ``workers``; a named pool's own ``workers`` wins (None: as many as the cores)."""
        raw = self.profile.raw if self.profile is not None else {}
        return (workers or raw.get("workers")) if self.name == "default" else (raw.get("workers") or workers)

    def find_links(self) -> Links:
        """The links to its scheduler's web server that answer from where the user sits.

        Where the scheduler runs in this process (a LocalCluster, a batch profile's), the links
        name the address its server is bound to, and Dask's dashboard only when it serves one;
        a user who may sit elsewhere (a batch profile, an SSH session) is given the tunnel to a
        loopback address.  A scheduler elsewhere keeps Dask's link, its dashboard as its owner chose.
        """
        server = served_at(self.cluster or getattr(self.client, "cluster", None))
        if server is not None:
            plots = server.plots
        else:  # a scheduler djdask started elsewhere (Kubernetes), or one it did not start
            plots = self.cluster is None or bool(config.get("campaign.dask-dashboard"))
        elsewhere = self.profile is not None and self.profile.kind.name != "local"
        return links_to(
            self.client.dashboard_link,
            plots=plots,
            served=server,
            scheduler_host=urlsplit(self.client.scheduler.address).hostname,
            tunnel_from=login_host() if elsewhere or "SSH_CONNECTION" in os.environ else None,
        )

    def offers(self, resources: dict[str, float]) -> bool:
        """Whether the workers of this pool's profile offer ``resources``."""
        return covers(self.profile.raw.get("resources") if self.profile is not None else None, resources)


def covers(offered: dict | None, needed: dict[str, float]) -> bool:
    """Whether resources ``offered`` (by a worker, or a profile's workers) meet ``needed``."""
    offered = offered or {}
    return all(float(offered.get(r, 0)) >= float(n) for r, n in needed.items())


def resources_of(cls: type) -> dict[str, float] | None:
    """The worker resources a table's ``make()`` needs: configured, else declared on its class."""
    configured = config.get("campaign.resources") or {}
    declared = configured.get(cls.__name__) or getattr(cls, "djdask_resources", None)
    return dict(declared) if declared else None


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().endswith(":")]
    return " / ".join(lines[-n:])


def _executing(dask_worker) -> list[str]:
    """Keys of the tasks a worker is executing right now (run on each worker)."""
    return [str(ts.key) for ts in dask_worker.state.executing]


def _stop_starting(dask_worker) -> None:
    """Run on each worker: no make() starts from now on."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    if plugin is not None:
        plugin.stopping = True


class Pools:
    """The pools of one campaign, by name; ``default`` always among them.

    Parameters
    ----------
    cluster : str or mapping, optional
        A profile name (the default pool), or ``{pool: profile}``; None: a
        LocalCluster (or ``client``'s cluster).
    client : distributed.Client, optional
        Run on this client's cluster: the one pool, which the campaign does not close.
    window : int
        Tasks in flight per worker.
    """

    def __init__(self, cluster: str | Mapping[str, str] | None, client: Any, *, window: int) -> None:
        self.window = window
        self.client = client
        # A following campaign's scaling pools keep their workers this long without work (then none).
        self.idle_after: float | None = None
        if client is not None or not cluster:
            self.pools = {"default": Pool("default")}
            return
        named = {"default": cluster} if isinstance(cluster, str) else dict(cluster)
        if "default" not in named:
            raise DjdaskError(
                f"Pools {', '.join(sorted(named))} have no `default` pool for the tables no other pool takes. "
                "Add one: --cluster default=PROFILE."
            )
        self.pools = {name: Pool(name, resolve(profile)) for name, profile in named.items()}

    def __iter__(self):
        return iter(self.pools.values())

    @property
    def default(self) -> Pool:
        return self.pools["default"]

    def route(self, class_name: str, resources: dict[str, float] | None) -> Pool:
        """The pool a table's keys run on: configured, else by resources, else default."""
        configured = (config.get("campaign.pools") or {}).get(class_name)
        if configured is not None:
            if configured not in self.pools:
                raise DjdaskError(
                    f"`djdask.campaign.pools.{class_name}` names pool {configured!r}, which this "
                    f"campaign does not have (pools: {', '.join(sorted(self.pools))}). Add it with "
                    f"--cluster {configured}=PROFILE or change the setting."
                )
            return self.pools[configured]
        if resources:
            for pool in self.pools.values():
                if pool.name != "default" and pool.offers(resources):
                    return pool
        return self.default

    def start(
        self, workers: int | None, scheduler_plugin: Any, worker_plugin: Any, redact, losses: Losses | None = None
    ) -> None:
        """Start each pool's workers (or reach its scheduler), register the pipeline and the
        nannies' watchdog, and send the workers' exit reports to ``losses``."""
        for pool in self.pools.values():
            # A task whose worker dies is given up at once, not run on more workers
            # (Dask's default, 3): the campaign decides which of its keys is to blame
            # (djdask.campaign.losses). Only the schedulers the campaign starts; a given one keeps its own.
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                count = pool.local_workers(workers)
                if pool.cap is not None and not pool.without_database:  # capped by the database's connections
                    count = pool.cap
                if pool.profile is not None:
                    pool.demand = Demand(cap=None if pool.without_database else pool.cap)
                    pool.client, pool.cluster = pool.profile.start(count, pool.demand)
                elif self.client is not None:
                    pool.client = self.client
                else:
                    pool.cluster = local_cluster(count)
                    pool.client = Client(pool.cluster)
            if losses is not None:
                losses.subscribe(pool.client)
            # The nannies first: the workers' beacons are the files their nannies create.
            pool.client.register_plugin(WatchdogPlugin(), name=WatchdogPlugin.name)
            pool.client.register_plugin(worker_plugin, name=worker_plugin.name)
            try:
                pool.client.register_plugin(scheduler_plugin, name=scheduler_plugin.name)
            except Exception as err:  # the campaign runs without its page
                logger.warning(
                    "Pool %s: the campaign page could not be added to the Dask dashboard (%s). Install djdask "
                    "where the scheduler runs to have it.",
                    pool.name,
                    redact(str(err)),
                )
            if pool.without_database:
                pool.database_side = start_database_side(pool, pool.database_workers)
            pool.links = pool.find_links()
        for pool in self.pools.values():
            if pool.name != "default":
                logger.info("Pool %s (%s): %s", pool.name, pool.profile.name, "; ".join(pool.links.lines()))

    def size(self, tables: Iterable[TableState]) -> None:
        """Task slots per pool and per table from the workers now present."""
        present = {}
        now = time.monotonic()
        for pool in self.pools.values():
            everyone = pool.client.scheduler_info(n_workers=-1)["workers"].values()
            # The database side of a pool without database access is not its workers.
            present[pool.name] = [w for w in everyone if DATABASE_RESOURCE not in (w.get("resources") or {})]
            if pool.sized_at is not None:
                pool.worker_seconds += pool.workers * (now - pool.sized_at)
            pool.workers, pool.sized_at = len(present[pool.name]), now
            pool.capacity = max(1, len(present[pool.name])) * self.window
            self.check_submissions(pool, bool(present[pool.name]))
        for state in tables:
            workers = present[state.pool.name]
            if state.resources is None:
                state.slots = state.pool.capacity
            else:
                eligible = sum(1 for w in workers if covers(w.get("resources"), state.resources))
                if not eligible and state.pool.offers(state.resources) and state.pool.demand is not None:
                    eligible = 1  # the pool's jobs will offer them: keys wait there, and ask for jobs
                state.slots = eligible * self.window

    @staticmethod
    def check_submissions(pool: Pool, has_workers: bool) -> None:
        """Say what the pool's job watch found of jobs whose worker has not joined
        (:mod:`djdask.clusters.jobwatch`), and stop when it gave up on the pool, or when a
        pool's batch system refuses its jobs and none was ever taken: the profile is wrong
        (queue, account, memory, python), and waiting would never end."""
        demand = pool.demand
        if demand is None:
            return
        said = len(demand.findings)
        for finding in demand.findings[pool.findings_said : said]:
            logger.warning("Pool %s: %s", pool.name, finding)
        if said > pool.findings_said:
            pool.notice = demand.findings[said - 1]
        pool.findings_said = said
        if has_workers:
            pool.notice = None
        if demand.fatal is not None:
            raise ProfileError(demand.fatal)
        if not demand.submit_errors:
            return
        if demand.submitted or has_workers:
            if len(demand.submit_errors) == 1 or len(demand.submit_errors) % 20 == 0:
                logger.warning("Pool %s: a job submission was refused: %s", pool.name, demand.submit_errors[-1])
            return
        name = pool.profile.name
        raise ProfileError(
            f"Profile {name!r} could not submit a worker job: {_last_lines(demand.submit_errors[-1])}. "
            f"Fix its settings (queue, account, cores, memory, walltime) in `djdask.clusters.{name}`; "
            f"`djdask clusters script {name}` prints the job script it submits."
        )

    def update_demand(self, tables: Iterable[TableState]) -> None:
        """Tell scaling pools how many worker processes their keys could use now; a following
        campaign's pools keep the workers they have for ``idle_after`` after their last work,
        then scale to none (distributed's Adaptive retires them, and asks again for keys)."""
        tables = list(tables)
        now = time.monotonic()
        for pool in self.pools.values():
            if pool.demand is None:
                continue
            wanted = sum(t.pending + t.keys for t in tables if t.pool is pool)
            if wanted:
                pool.busy_at = now
            elif self.idle_after is not None and now - pool.busy_at < self.idle_after:
                wanted = pool.workers
            pool.demand.workers = wanted

    def stop_starting(self) -> None:
        """Tell every worker to start no more make() (the campaign stops): the tasks it holds
        return their keys unstarted, and a task about to be cancelled cannot commit a key
        the campaign releases."""
        for pool in self.pools.values():
            try:
                pool.client.run(_stop_starting)
            except Exception as err:  # workers gone: nothing starts
                logger.debug("Could not tell the workers of pool %s to stop: %s", pool.name, err)

    def executing(self) -> set[str]:
        """Keys of the tasks the workers of every pool run right now."""
        running: set[str] = set()
        for pool in self.pools.values():
            try:
                running |= {k for keys in pool.client.run(_executing).values() for k in keys}
            except Exception as err:  # workers gone: nothing is running
                logger.debug("Could not ask the workers of pool %s what they run: %s", pool.name, err)
        return running

    def close(self) -> None:
        """Close what the campaign started.  Closing a cluster kills its workers, which
        rolls back any make() still in its transaction (no partial rows), and cancels
        its batch jobs."""
        for pool in self.pools.values():
            if pool.demand is not None and pool.demand.watch is not None:
                pool.demand.watch.stop()
            if pool.cluster is None:
                continue
            close_database_side(pool)
            # Heard no more before the client goes: a worker's event sent to a closed client
            # makes the scheduler log a CRITICAL traceback (a race at every shutdown).
            for topic in (OUTAGE_TOPIC, TOPIC, MEMORY_TOPIC):
                try:
                    pool.client.unsubscribe_topic(topic)
                except Exception as err:  # not subscribed, or the scheduler is gone
                    logger.debug("Pool %s: could not unsubscribe from %s: %s", pool.name, topic, err)
            for closable in (pool.client, pool.cluster):
                try:
                    if closable is not None:
                        closable.close()
                except Exception as err:  # keep closing the others
                    logger.error("Could not close pool %s: %s", pool.name, err)
