"""Cluster profiles: a name in dask config turned into Dask workers.

A profile is ``djdask.clusters.<name>``: a ``kind`` and its settings.  Defaults
ship in ``clusters/clusters.yaml``; users add or override profiles in
``~/.config/dask/djdask.yaml``.  Kinds are looked up in a registry of lazy
``"module:Class"`` strings, so a kind's dependencies load only when it is used.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import dask.config
from dask.utils import parse_timedelta

from djdask.config import namespace as config
from djdask.errors import ProfileError, ProfileNotFoundError

from .credentials import without_credentials, without_database
from .keys import check_keys
from .security import client_security

__all__ = [
    "KINDS",
    "Profile",
    "batch_kind",
    "light_upkeep",
    "local_cluster",
    "profile_names",
    "resolve",
    "worker_environment",
]

logger = logging.getLogger(__name__)

config.load_defaults(os.path.join(os.path.dirname(__file__), "clusters.yaml"))

_KINDS: dict[str, str] = {
    "local": "djdask.clusters.profiles:LocalKind",
    "address": "djdask.clusters.profiles:AddressKind",
    "scheduler-file": "djdask.clusters.profiles:SchedulerFileKind",
    "slurm": "djdask.clusters.slurm:SLURMKind",
    "pbs": "djdask.clusters.pbs:PBSKind",
    "sge": "djdask.clusters.sge:SGEKind",
    "lsf": "djdask.clusters.lsf:LSFKind",
    "htcondor": "djdask.clusters.htcondor:HTCondorKind",
    "kubernetes": "djdask.clusters.kubernetes:KubernetesKind",
}
#: The registered kinds (read-only view): name -> "module:Class".
KINDS: Mapping[str, str] = MappingProxyType(_KINDS)

_SECRET = re.compile(r"pass|secret|token|credential|key$", re.I)


def _kind(name: str) -> Any:
    try:
        spec = _KINDS[name]
    except KeyError:
        raise ProfileNotFoundError(
            f"Unknown profile kind {name!r}. Known kinds: {', '.join(sorted(_KINDS))}."
        ) from None
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)()


def batch_kind(name: str) -> Any | None:
    """The kind object named ``name`` when it can run a campaign's controller as a batch job
    (``djdask submit``), else None (``local``, an unknown name, a kind without job scripts)."""
    if name not in _KINDS:
        return None
    kind = _kind(name)
    return kind if getattr(kind, "directive_prefix", "") else None


def profile_names() -> list[str]:
    """The names of the profiles in dask config."""
    return sorted(dask.config.get("djdask.clusters", {}) or {})


@dataclass(frozen=True)
class Profile:
    """A resolved profile: its name, its kind object and its raw settings."""

    name: str
    kind: Any
    raw: dict[str, Any]

    def shown(self) -> dict[str, Any]:
        """Settings for display, with anything that looks like a secret hidden."""
        out = _masked(self.raw)
        if hasattr(self.kind, "settings"):
            out["resolved"] = _masked(self.kind.settings(self.name, self.raw))
        return out

    def validate(self) -> Profile:
        """Check the settings (and that the batch system is here) before anything starts."""
        if hasattr(self.kind, "validate"):
            self.kind.validate(self.name, self.raw)
        return self

    def start(self, workers: int | None = None, demand: Any = None):
        """Start (or reach) this profile's workers; return ``(client, cluster)``, where
        ``cluster`` is None when the workers are not djdask's to stop.  ``demand``
        (:class:`~djdask.clusters.scaling.Demand`) drives the scaling of kinds that scale."""
        return self.kind.start(self.name, self.raw, workers, demand)


def _masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("********" if _SECRET.search(str(k)) and v else v) for k, v in settings.items()}


def resolve(name: str) -> Profile:
    """The profile ``name`` from dask config, its keys checked against those its kind takes;
    raise ProfileNotFoundError listing the known profiles, ProfileError naming a key to fix."""
    raw = dask.config.get(f"djdask.clusters.{name}", None)
    if raw is None:
        raise ProfileNotFoundError(
            f"Unknown cluster profile {name!r}. Known profiles: {', '.join(profile_names())}. "
            "Add one under `djdask.clusters` in ~/.config/dask/djdask.yaml."
        )
    # Keys as in YAML (max-jobs) or from DASK_ environment variables (max_jobs).
    raw = {str(k).replace("_", "-"): v for k, v in dict(raw).items()}
    if "kind" not in raw:
        raise ProfileError(
            f"Profile {name!r} has no `kind`. Set `djdask.clusters.{name}.kind` to one of: {', '.join(sorted(_KINDS))}."
        )
    kind = _kind(str(raw["kind"]))
    check_keys(name, kind, raw)
    return Profile(name, kind, raw)


class LocalKind:
    """``local``: a LocalCluster on this machine."""

    name = "local"

    def accepted_keys(self) -> frozenset[str]:
        """The keys a local profile takes (its workers get no ``resources``: LocalCluster gives none)."""
        return frozenset({"kind", "workers", "database", "database-workers"})

    def start(self, profile: str, raw: dict[str, Any], workers: int | None = None, demand: Any = None):
        # lazy: Dask's client (0.4 s), only as a pool starts: listing or checking profiles goes without
        from distributed import Client

        cluster = local_cluster(workers or raw.get("workers"), without_database=without_database(raw))
        return Client(cluster), cluster


class AddressKind:
    """``address``: a running scheduler, ``address: tcp://host:8786``."""

    name = "address"

    def accepted_keys(self) -> frozenset[str]:
        """The keys an address profile takes; ``resources``: what its workers offer, for routing."""
        return frozenset({"kind", "address", "connect-timeout", "security", "resources"})

    def start(self, profile: str, raw: dict[str, Any], workers: int | None = None, demand: Any = None):
        if not raw.get("address"):
            raise ProfileError(
                f"Profile {profile!r} (address) has no `address`. Set `djdask.clusters.{profile}.address` "
                "to the scheduler's address, for example tcp://10.0.0.5:8786."
            )
        return _connect(
            profile,
            raw,
            f"the scheduler at {raw['address']}",
            f"djdask.clusters.{profile}.address",
            address=str(raw["address"]),
        ), None


class SchedulerFileKind:
    """``scheduler-file``: a scheduler started inside a batch job that wrote its address to a file."""

    name = "scheduler-file"

    def accepted_keys(self) -> frozenset[str]:
        """The keys a scheduler-file profile takes; ``resources``: what its workers offer, for routing."""
        return frozenset({"kind", "scheduler-file", "connect-timeout", "security", "resources"})

    def start(self, profile: str, raw: dict[str, Any], workers: int | None = None, demand: Any = None):
        path = raw.get("scheduler-file")
        if not path or not os.path.exists(os.path.expanduser(str(path))):
            raise ProfileError(
                f"Profile {profile!r} (scheduler-file) needs `scheduler-file`, the path a scheduler "
                f"wrote with `dask scheduler --scheduler-file PATH`; got {path!r}."
            )
        return _connect(
            profile,
            raw,
            f"the scheduler named in {path}",
            f"djdask.clusters.{profile}.scheduler-file",
            scheduler_file=os.path.expanduser(str(path)),
        ), None


def _connect(profile: str, raw: dict[str, Any], what: str, setting: str, **where: Any):
    """A Client of a running scheduler, or a ProfileError saying which setting to check."""
    # lazy: Dask's client (0.4 s), only as a pool starts: listing or checking profiles goes without
    from distributed import Client

    timeout = parse_timedelta(raw.get("connect-timeout", "10s"))
    try:
        return Client(timeout=timeout, **client_security(profile, raw), **where)
    except (OSError, TimeoutError) as err:
        raise ProfileError(
            f"Profile {profile!r}: cannot reach {what} within {timeout:.0f} s ({err}). Check that the scheduler "
            f"is running and reachable from this machine, and `{setting}`; raise "
            f"`djdask.clusters.{profile}.connect-timeout` for a slow network."
        ) from None


#: Environment variables a worker must see as the campaign has them now.
WORKER_ENV_PREFIXES = ("DJ_", "DJDASK_", "AWS_", "PG")


def worker_environment() -> dict[str, str]:
    """The campaign's DataJoint, djdask and storage settings from its environment."""
    return {k: v for k, v in os.environ.items() if k.startswith(WORKER_ENV_PREFIXES)}


#: Dask's per-process upkeep that ``light-workers`` slows or turns off: the statistical
#: profiler (100 samples a second), the event-loop tick (50 a second), the memory monitor
#: (10 a second) and the system monitor (2 a second), in each worker and nanny.
LIGHT_UPKEEP = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}

#: ``light-workers: auto`` makes a LocalCluster light beyond this many workers per core.
LIGHT_PER_CORE = 4


def light_upkeep(workers: int) -> dict[str, Any]:
    """The Dask settings that make a LocalCluster of ``workers`` light (``djdask.campaign.light-workers``):
    64 idle workers and their nannies on 2 cores took 1.3 cores of upkeep, 0.16 light."""
    light = config.get("campaign.light-workers")
    if light == "auto":
        light = workers > LIGHT_PER_CORE * (os.cpu_count() or 1)
    if light:
        logger.info(
            "%d workers: Dask's profiler is off and its monitors slowed (djdask.campaign.light-workers)", workers
        )
        return dict(LIGHT_UPKEEP)
    return {}


def local_cluster(workers: int | None = None, *, dashboard_address: str | None = None, without_database: bool = False):
    """Start a LocalCluster of ``workers`` single-threaded worker processes.

    Parameters
    ----------
    workers : int, optional
        Number of worker processes; default the number of CPU cores.
    dashboard_address : str, optional
        Where the Dask dashboard listens; default ``djdask.campaign.dashboard-address``.
    without_database : bool
        Workers that open no connection and run only ``make_compute`` (a ``local`` profile
        with ``database: none``, to try a split on one machine).  They fork from a process
        that has this machine's credentials and drop them from their environment as they
        start; for workers that never had them, use a batch profile.
    """
    # lazy: Dask's client (0.4 s), only as a pool starts: listing or checking profiles goes without
    from distributed import LocalCluster

    # lazy: the worker's modules (Dask's worker, psutil), only as a pool starts
    from djdask.worker import COMPUTE_RESOURCE, DATABASE_ENV, FORGET_ENV

    if workers is None:
        workers = os.cpu_count() or 1
    if int(workers) < 1:
        raise ProfileError(f"--workers must be at least 1, got {workers}.")
    # Worker processes inherit an ignored SIGINT: Ctrl-C at the terminal goes to
    # the whole process group, and it is the campaign's to handle (stop claiming,
    # let running make() calls finish), not the workers' to die of.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        # Workers fork from a server process that has imported Dask, NumPy and pandas once
        # (distributed's forkserver): a worker, or one restarted after a crash, starts in
        # a fraction of the CPU a fresh interpreter takes.  That server keeps the environment
        # it started with, so the settings the campaign exports (database, stores) are given
        # to each worker explicitly.
        upkeep = light_upkeep(int(workers))
        env = worker_environment()
        if without_database:  # they drop the credentials they inherit as they start (PipelinePlugin)
            env = {**without_credentials(env), DATABASE_ENV: "none", FORGET_ENV: "1"}
        with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver", **upkeep}):
            return LocalCluster(
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=str(config.resolve("campaign.dashboard-address", dashboard_address)),
                memory_limit=config.get("campaign.worker-memory"),
                silence_logs=logging.ERROR,
                scheduler_kwargs={"dashboard": bool(config.get("campaign.dask-dashboard"))},
                env=env,
                resources={COMPUTE_RESOURCE: 1} if without_database else None,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
