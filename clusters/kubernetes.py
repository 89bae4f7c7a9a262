"""The `kubernetes` profile kind: workers as pods of a DaskCluster (dask-kubernetes operator).

The manifest is built with dask-kubernetes' own ``make_cluster_spec`` and then
given what a campaign needs: one single-threaded worker process per pod (one
``make()`` at a time), the profile's CPU, memory and GPU requests, Dask worker
resources for routing, and the database credentials from a Kubernetes Secret
(``secret``), never from this machine's environment.  The scheduler runs in the
cluster; djdask scales the worker replicas to the campaign's pending work, up
to ``max-workers``.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

from dask.utils import parse_timedelta

from djdask import config
from djdask.errors import ProfileError

from .scaling import Demand

__all__ = ["KubernetesKind"]

logger = logging.getLogger(__name__)

_OWN = (
    "kind",
    "image",
    "namespace",
    "workers",
    "max-workers",
    "scale-down-after",
    "cores",
    "memory",
    "gpus",
    "env",
    "secret",
    "resources",
    "name",
    "scheduler-service-type",
    "connect-timeout",
)


class KubernetesKind:
    name = "kubernetes"

    def validate(self, profile: str, raw: dict[str, Any]) -> None:
        self.manifest(profile, raw)

    def manifest(self, profile: str, raw: dict[str, Any]) -> dict[str, Any]:
        """The DaskCluster manifest this profile would create."""
        unknown = sorted(set(raw) - set(_OWN))
        if unknown:
            raise ProfileError(
                f"Profile {profile!r} (kubernetes) has unknown setting(s) {', '.join(unknown)}. "
                f"Known: {', '.join(sorted(_OWN))}."
            )
        for key in ("image", "cores", "memory"):
            if raw.get(key) in (None, ""):
                raise ProfileError(
                    f"Profile {profile!r} (kubernetes) has no `{key}`. Set `djdask.clusters.{profile}.{key}` "
                    "in ~/.config/dask/djdask.yaml, for example {kind: kubernetes, image: "
                    "ghcr.io/mylab/pipeline:1.0, cores: 1, memory: 4G, secret: datajoint-credentials}."
                )
        env = raw.get("env") or {}
        if not isinstance(env, dict):
            raise ProfileError(f"Profile {profile!r}: `env` must be a mapping of NAME: value.")
        secretish = [k for k in env if any(w in k.upper() for w in ("PASS", "SECRET", "TOKEN"))]
        if secretish:
            raise ProfileError(
                f"Profile {profile!r} puts {', '.join(secretish)} in `env`, which would be written into the "
                f"manifest in clear. Put credentials in a Kubernetes Secret and name it in "
                f"`djdask.clusters.{profile}.secret`."
            )
        try:
            from dask_kubernetes.operator import make_cluster_spec
        except ImportError:
            raise ProfileError(
                f"Profile {profile!r} is of kind kubernetes, which needs dask-kubernetes: "
                "pip install 'djdask[kubernetes]'."
            ) from None

        limits = {"cpu": str(raw["cores"]), "memory": str(raw["memory"])}
        if raw.get("gpus"):
            limits["nvidia.com/gpu"] = str(raw["gpus"])
        command = ["dask-worker", "--nthreads", "1"]
        if raw.get("resources"):
            command += ["--resources", ",".join(f"{k}={v}" for k, v in raw["resources"].items())]
        spec = make_cluster_spec(
            name=str(raw.get("name") or f"djdask-{profile}"),
            image=str(raw["image"]),
            n_workers=int(raw.get("workers", 0)),
            resources={"requests": dict(limits), "limits": limits},
            env={str(k): str(v) for k, v in env.items()},
            worker_command=command,
            scheduler_service_type=str(raw.get("scheduler-service-type", "ClusterIP")),
        )
        spec = copy.deepcopy(spec)  # make_cluster_spec shares one resources dict between pods
        scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
        scheduler["resources"] = {"requests": {"cpu": "1", "memory": "2G"}, "limits": {"cpu": "1", "memory": "2G"}}
        if raw.get("secret"):
            for container in (scheduler, spec["spec"]["worker"]["spec"]["containers"][0]):
                container["envFrom"] = [{"secretRef": {"name": str(raw["secret"])}}]
        if raw.get("namespace"):
            spec["metadata"]["namespace"] = str(raw["namespace"])
        return spec

    def script(self, profile: str, raw: dict[str, Any]) -> str:
        import yaml

        return yaml.safe_dump(self.manifest(profile, raw), sort_keys=False)

    def settings(self, profile: str, raw: dict[str, Any]) -> dict[str, Any]:
        worker = self.manifest(profile, raw)["spec"]["worker"]
        container = worker["spec"]["containers"][0]
        return {
            "image": container["image"],
            "replicas": worker["replicas"],
            "args": container["args"],
            "resources": container["resources"],
        }

    def start(self, profile: str, raw: dict[str, Any], workers: int | None = None, demand: Demand | None = None):
        from dask_kubernetes.operator import KubeCluster
        from distributed import Client

        spec = self.manifest(profile, raw)
        try:
            cluster = KubeCluster(custom_cluster_spec=spec, namespace=raw.get("namespace"), quiet=True)
        except Exception as err:  # no kubeconfig, API server unreachable, CRDs missing
            raise ProfileError(
                f"Profile {profile!r}: could not create the DaskCluster ({err}). Check the kubeconfig "
                "(KUBECONFIG, `kubectl get daskclusters`) and that the dask-kubernetes operator is installed."
            ) from None
        if demand is not None:
            after = parse_timedelta(raw.get("scale-down-after", config.get("cluster-defaults.scale-down-after")))
            DemandScaler(
                cluster, demand, int(raw.get("max-workers", config.get("cluster-defaults.max-workers"))), after=after
            ).start()
        else:
            cluster.adapt(minimum=0, maximum=int(raw.get("max-workers", config.get("cluster-defaults.max-workers"))))
        return Client(cluster), cluster


class DemandScaler(threading.Thread):
    """Scales a cluster that has its own ``scale(n)`` (KubeCluster) to ``demand.workers``,
    at most ``maximum``; scales down only after the demand stayed lower for ``after`` s."""

    def __init__(self, cluster: Any, demand: Demand, maximum: int, interval: float = 2.0, after: float = 20.0) -> None:
        super().__init__(name="djdask-scaler", daemon=True)
        self.cluster, self.demand, self.maximum = cluster, demand, maximum
        self.interval, self.after = interval, after
        self.stopped = threading.Event()

    def run(self) -> None:
        import time

        current, lower_since = 0, None
        while not self.stopped.wait(self.interval):
            if getattr(self.cluster, "status", None) is not None and self.cluster.status.name in ("closing", "closed"):
                return
            target = max(0, min(self.maximum, int(self.demand.workers)))
            now = time.monotonic()
            if target >= current:
                lower_since = None
            elif lower_since is None:
                lower_since = now
            if target > current or (lower_since is not None and now - lower_since >= self.after):
                try:
                    self.cluster.scale(target)
                    current, lower_since = target, None
                except Exception as err:  # keep scaling on the next tick
                    logger.warning("Could not scale the Kubernetes workers to %d: %s", target, err)
