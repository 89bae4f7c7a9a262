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
import re
import threading
import time
from typing import Any

import yaml
from dask.utils import parse_timedelta
from distributed import Client

from djdask.config import namespace as config
from djdask.errors import ProfileError
from djdask.worker.executor import DATABASE_ENV
from djdask.worker.split import COMPUTE_RESOURCE

from .credentials import without_credentials, without_database
from .jobwatch import JobStatus
from .scaling import Demand

__all__ = ["KubernetesKind", "pod_status"]

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
    "node-selector",
    "tolerations",
    "service-account",
    "image-pull-secrets",
    "database",
    "database-workers",
)
#: What a toleration may say (Kubernetes' core/v1 Toleration).
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


class KubernetesKind:
    name = "kubernetes"

    def accepted_keys(self) -> frozenset[str]:
        """The keys a kubernetes profile takes: djdask's own, each translated into the manifest.
        KubeCluster's other keywords are not: djdask hands it the manifest alone."""
        return frozenset(_OWN)

    def validate(self, profile: str, raw: dict[str, Any]) -> None:
        self.manifest(profile, raw)

    def manifest(self, profile: str, raw: dict[str, Any]) -> dict[str, Any]:
        """The DaskCluster manifest this profile would create."""
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
        pod_settings = self._pod_settings(profile, raw)
        try:
            from dask_kubernetes.operator import make_cluster_spec  # lazy: an optional dependency (1 s)
        except ImportError:
            raise ProfileError(
                f"Profile {profile!r} is of kind kubernetes, which needs dask-kubernetes: "
                "pip install 'djdask[kubernetes]'."
            ) from None

        limits = {"cpu": str(raw["cores"]), "memory": str(raw["memory"])}
        if raw.get("gpus"):
            limits["nvidia.com/gpu"] = str(raw["gpus"])
        command = ["dask-worker", "--nthreads", "1"]
        resources = dict(raw.get("resources") or {})
        offline = without_database(raw)
        if offline:  # make_compute only (djdask.campaign.split)
            resources[COMPUTE_RESOURCE] = 1
        if resources:
            command += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
        name = str(raw.get("name") or f"djdask-{profile}")
        if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 50:
            raise ProfileError(
                f"Profile {profile!r} would name its DaskCluster {name!r}, which Kubernetes refuses: a name is "
                "at most 50 lower-case letters, digits and '-' (the operator adds suffixes up to 63). "
                f"Set `djdask.clusters.{profile}.name`, for example {name.lower().replace('_', '-')[:50].strip('-')!r}."
            )
        spec = make_cluster_spec(
            name=name,
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
        worker = spec["spec"]["worker"]["spec"]["containers"][0]
        if raw.get("secret"):  # workers without database access get none of it
            for container in (scheduler,) if offline else (scheduler, worker):
                container["envFrom"] = [{"secretRef": {"name": str(raw["secret"])}}]
        if offline:
            given = {e["name"]: e.get("value", "") for e in worker.get("env") or []}
            kept = without_credentials(given)
            worker["env"] = [e for e in worker.get("env") or [] if e["name"] in kept]
            worker["env"].append({"name": DATABASE_ENV, "value": "none"})
        for pod in (spec["spec"]["scheduler"]["spec"], spec["spec"]["worker"]["spec"]):
            pod.update(copy.deepcopy(pod_settings))
        if raw.get("namespace"):
            spec["metadata"]["namespace"] = str(raw["namespace"])
        return spec

    def _pod_settings(self, profile: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Pod-spec fields from the profile: where pods may run (``node-selector``,
        ``tolerations``), as whom (``service-account``), pulling with what (``image-pull-secrets``)."""
        pod: dict[str, Any] = {}
        selector = raw.get("node-selector")
        if selector is not None:
            if not isinstance(selector, dict) or not selector:
                raise ProfileError(
                    f"Profile {profile!r}: `node-selector` must be a mapping of node label: value, for example "
                    "{node-pool: highmem}."
                )
            pod["nodeSelector"] = {str(k): str(v) for k, v in selector.items()}
        tolerations = raw.get("tolerations")
        if tolerations is not None:
            bad = not isinstance(tolerations, list) or any(
                not isinstance(t, dict) or not t or set(t) - _TOLERATION_KEYS for t in tolerations
            )
            if bad:
                raise ProfileError(
                    f"Profile {profile!r}: `tolerations` must be a list of Kubernetes tolerations, each a mapping "
                    f"of {', '.join(sorted(_TOLERATION_KEYS))}; for example "
                    "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]."
                )
            pod["tolerations"] = [
                {k: (int(v) if k == "tolerationSeconds" else str(v)) for k, v in t.items()} for t in tolerations
            ]
        if raw.get("service-account"):
            pod["serviceAccountName"] = str(raw["service-account"])
        pulls = raw.get("image-pull-secrets")
        if pulls:
            if isinstance(pulls, str):
                pulls = [pulls]
            pod["imagePullSecrets"] = [{"name": str(name)} for name in pulls]
        return pod

    def controller(self, profile: str, raw: dict[str, Any], populate: list[str]) -> list[dict[str, Any]]:
        """The objects that run a campaign's controller inside the cluster: a ServiceAccount
        that may create DaskClusters (Role, RoleBinding), a ConfigMap holding this profile
        (the controller's dask config) and a Job running ``djdask populate`` with ``populate``
        (module and options) on this profile, its credentials from the profile's Secret."""
        cluster = self.manifest(profile, raw)
        namespace = cluster["metadata"].get("namespace")
        name = f"{cluster['metadata']['name']}-controller"
        account = name

        def meta(object_name: str) -> dict[str, Any]:
            return {"name": object_name, **({"namespace": namespace} if namespace else {}), "labels": {"app": "djdask"}}

        worker = cluster["spec"]["worker"]["spec"]
        container = worker["containers"][0]
        controller_container: dict[str, Any] = {
            "name": "controller",
            "image": container["image"],
            "command": ["djdask", "populate", *populate, "--cluster", profile],
            "env": [{"name": "DASK_CONFIG", "value": "/etc/djdask"}]
            + [e for e in container.get("env", []) if e.get("name") != "DASK_CONFIG"],
            "resources": {"requests": {"cpu": "1", "memory": "2G"}, "limits": {"cpu": "2", "memory": "4G"}},
            "volumeMounts": [{"name": "djdask-config", "mountPath": "/etc/djdask", "readOnly": True}],
        }
        if container.get("envFrom"):
            controller_container["envFrom"] = container["envFrom"]
        pod: dict[str, Any] = {
            "serviceAccountName": account,
            "restartPolicy": "Never",
            "containers": [controller_container],
            "volumes": [{"name": "djdask-config", "configMap": {"name": f"{name}-config"}}],
        }
        for key in ("nodeSelector", "tolerations", "imagePullSecrets"):
            if key in worker:
                pod[key] = worker[key]
        rules = [
            {
                "apiGroups": ["kubernetes.dask.org"],
                "resources": ["daskclusters", "daskworkergroups", "daskworkergroups/scale", "daskautoscalers"],
                "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods", "services", "pods/log"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        ]
        profile_config = {"djdask": {"clusters": {profile: {k: v for k, v in raw.items()}}}}
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(account)},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(account), "rules": rules},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(account),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [
                    {"kind": "ServiceAccount", "name": account, **({"namespace": namespace} if namespace else {})}
                ],
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(f"{name}-config"),
                "data": {"djdask.yaml": yaml.safe_dump(profile_config, sort_keys=False)},
            },
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": meta(name),
                "spec": {
                    "backoffLimit": 2,  # a new controller resumes: finished keys stay, reserved ones are freed
                    "template": {"metadata": {"labels": {"app": "djdask", "djdask-role": "controller"}}, "spec": pod},
                },
            },
        ]

    def script(self, profile: str, raw: dict[str, Any], controller: list[str] | None = None) -> str:
        """The DaskCluster manifest; with ``controller`` (``djdask populate`` arguments), the
        objects that run the campaign's controller in the cluster (``kubectl apply -f -``)."""
        if controller is not None:
            return yaml.safe_dump_all(self.controller(profile, raw, controller), sort_keys=False)
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
        from dask_kubernetes.operator import KubeCluster  # lazy: an optional dependency (1 s)

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
        current, lower_since = 0, None
        while not self.stopped.wait(self.interval):
            if getattr(self.cluster, "status", None) is not None and self.cluster.status.name in ("closing", "closed"):
                return
            target = max(0, min(self.maximum, self.demand.wanted))
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


#: Why a container waits, when its pod can never start as it is (not a step of a normal start).
_STUCK = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}


def pod_status(pod: dict[str, Any]) -> JobStatus:
    """What a worker pod's status (as the Kubernetes API returns it: ``status.phase``,
    ``status.conditions``, ``status.containerStatuses``) says, as a batch job's status for
    :mod:`djdask.clusters.jobwatch`: Pending with its reason (Unschedulable and the
    scheduler's message, ImagePullBackOff...), Running, or ended with the container's exit
    code and reason (OOMKilled, Error); a container in CrashLoopBackOff has ended for good."""
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or ""
    phase = status.get("phase") or "Unknown"
    containers = status.get("containerStatuses") or []
    for container in containers:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            return JobStatus(
                "ended",
                "CrashLoopBackOff",
                last.get("reason") or waiting.get("message") or "",
                _code(last.get("exitCode")),
                node,
            )
        if waiting.get("reason") in _STUCK:
            return JobStatus("pending", waiting["reason"], waiting.get("message") or "", None, node)
    if phase in ("Succeeded", "Failed"):
        terminated = (
            next(
                (
                    (c.get("state") or {}).get("terminated")
                    for c in containers
                    if (c.get("state") or {}).get("terminated")
                ),
                None,
            )
            or {}
        )
        return JobStatus(
            "ended",
            phase,
            terminated.get("reason") or status.get("reason") or "",
            _code(terminated.get("exitCode")),
            node,
        )
    if phase == "Pending":
        unscheduled = next(
            (
                c
                for c in status.get("conditions") or []
                if c.get("type") == "PodScheduled" and c.get("status") == "False"
            ),
            None,
        )
        if unscheduled:
            return JobStatus(
                "pending", unscheduled.get("reason") or "Unschedulable", unscheduled.get("message") or "", None, node
            )
        waiting = next(
            ((c.get("state") or {}).get("waiting") for c in containers if (c.get("state") or {}).get("waiting")), None
        )
        return JobStatus(
            "pending", (waiting or {}).get("reason") or "Pending", (waiting or {}).get("message") or "", None, node
        )
    return JobStatus("running" if phase == "Running" else "pending", phase, status.get("reason") or "", None, node)


def _code(value: Any) -> str | None:
    return None if value is None else str(value)
