"""The `kubernetes` kind: the DaskCluster manifest it would create, checked offline
(no Kubernetes API server can run here)."""

from __future__ import annotations

import time

import dask.config
import pytest
import yaml

from djdask.clusters import resolve
from djdask.errors import ProfileError

PROFILE = {
    "kind": "kubernetes",
    "image": "ghcr.io/mylab/pipeline:1.2",
    "namespace": "lab",
    "workers": 3,
    "cores": 2,
    "memory": "8G",
    "gpus": 1,
    "resources": {"GPU": 1},
    "secret": "datajoint-credentials",
    "env": {"DJ_HOST": "db.lab.svc", "DJ_BACKEND": "postgresql"},
}


def manifest(profile=PROFILE, name="k8s"):
    with dask.config.set({f"djdask.clusters.{name}": profile}):
        p = resolve(name)
        p.validate()
        return yaml.safe_load(p.kind.script(name, p.raw))


def test_manifest_carries_image_env_resources_and_worker_count():
    spec = manifest()
    assert spec["kind"] == "DaskCluster" and spec["apiVersion"].startswith("kubernetes.dask.org/")
    assert spec["metadata"] == {"name": "djdask-k8s", "namespace": "lab"}
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3
    container = worker["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/mylab/pipeline:1.2"
    assert {"name": "DJ_HOST", "value": "db.lab.svc"} in container["env"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8G", "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"]["memory"] == "8G"
    args = container["args"]
    assert args[:3] == ["dask-worker", "--nthreads", "1"]  # one make() at a time per process
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert container["envFrom"] == [{"secretRef": {"name": "datajoint-credentials"}}]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["image"] == "ghcr.io/mylab/pipeline:1.2"
    assert "nvidia.com/gpu" not in scheduler["resources"]["limits"]  # the scheduler needs no GPU


def test_credentials_are_not_written_into_the_manifest():
    with pytest.raises(ProfileError, match=r"DJ_PASS.*Kubernetes Secret.*djdask\.clusters\.k8s\.secret"):
        manifest({**PROFILE, "env": {"DJ_PASS": "hunter2"}})


@pytest.mark.parametrize(("drop", "message"), [("image", "no `image`"), ("memory", "no `memory`")])
def test_missing_settings_name_the_key(drop, message):
    with pytest.raises(ProfileError, match=message):
        manifest({k: v for k, v in PROFILE.items() if k != drop})


def test_unknown_settings_are_refused():
    """A key djdask does not translate into the manifest would be ignored: refused, with the keys
    the kind takes. KubeCluster's own keywords too (``idle-timeout``): djdask hands it only the
    manifest, so accepting them would ignore them silently."""
    with pytest.raises(ProfileError, match=r"`djdask\.clusters\.k8s\.replicas`.*takes: .*max-workers"):
        manifest({**PROFILE, "replicas": 4})
    with pytest.raises(ProfileError, match=r"`djdask\.clusters\.k8s\.idle-timeout`"):
        manifest({**PROFILE, "idle-timeout": 60})
    with pytest.raises(ProfileError, match=r"`djdask\.clusters\.k8s\.imgae`.*did you mean image\?"):
        manifest({**PROFILE, "imgae": "x"})


# --- Validated as the API server would: the DaskCluster against the CRD that dask-kubernetes
# ships, the controller's objects against Kubernetes' own schemas (kubernetes-validate).

#: Every setting the README documents for a kubernetes profile, at once.
EVERY_SETTING = {
    **PROFILE,
    "max-workers": 40,
    "scale-down-after": "30s",
    "name": "segmentation",
    "scheduler-service-type": "LoadBalancer",
    "connect-timeout": "2m",
    "node-selector": {"cloud.google.com/gke-nodepool": "gpu-pool"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
    ],
    "service-account": "dask-workers",
    "image-pull-secrets": ["lab-registry"],
}
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes release still supported upstream


def _strict(schema):
    """The CRD's schema as the API server applies it under strict field validation (kubectl's
    default): an object that lists its properties takes no others."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def crd_validator():
    import importlib.resources

    import jsonschema

    # The CRD as the operator's Helm chart installs it (templates resolved), from the installed package.
    shipped = "deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
    crd = yaml.safe_load(importlib.resources.files("dask_kubernetes.operator").joinpath(shipped).read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # What the API server checks of every object beside its CRD's schema: a DNS-1123 name.
    dns_1123 = {
        "type": "string",
        "maxLength": 253,
        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    }
    schema["properties"].update(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": dns_1123, "namespace": dns_1123, "labels": {"type": "object"}},
                "additionalProperties": False,
            },
        }
    )
    return jsonschema.Draft7Validator(schema)


def crd_errors(spec) -> list[str]:
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator().iter_errors(spec)]


@pytest.mark.parametrize("profile", [PROFILE, EVERY_SETTING], ids=["usual", "every-setting"])
def test_the_daskcluster_manifest_is_valid_against_the_operators_crd(profile):
    spec = manifest(profile)
    assert crd_errors(spec) == []
    if profile is EVERY_SETTING:
        for pod in (spec["spec"]["worker"]["spec"], spec["spec"]["scheduler"]["spec"]):
            assert pod["nodeSelector"] == {"cloud.google.com/gke-nodepool": "gpu-pool"}
            assert pod["tolerations"][1]["tolerationSeconds"] == 60
            assert pod["serviceAccountName"] == "dask-workers"
            assert pod["imagePullSecrets"] == [{"name": "lab-registry"}]
        assert spec["metadata"]["name"] == "segmentation"
        assert spec["spec"]["scheduler"]["service"]["type"] == "LoadBalancer"


def test_the_crd_check_refuses_what_the_api_server_would():
    """The check can fail: fields the CRD does not know, or of the wrong type, are reported."""
    spec = manifest()
    spec["spec"]["worker"]["spec"]["containers"][0]["resource"] = spec["spec"]["worker"]["spec"]["containers"][0].pop(
        "resources"
    )
    spec["spec"]["worker"]["replicas"] = "three"
    spec["spec"]["scheduler"]["spec"]["tolerations"] = "spot"
    spec["metadata"]["name"] = "Segmentation_Pool"
    errors = crd_errors(spec)
    assert any("resource" in e and "not allowed" in e for e in errors), errors
    assert any(e.startswith("spec.worker.replicas") for e in errors), errors
    assert any(e.startswith("spec.scheduler.spec.tolerations") for e in errors), errors
    assert any(e.startswith("metadata.name") for e in errors), errors


def controller_objects(profile=EVERY_SETTING, populate="mylab.pipeline --target Segmentation -r 'session=3'"):
    with dask.config.set({"djdask.clusters.k8s": profile}):
        p = resolve("k8s")
        p.validate()
        return list(yaml.safe_load_all(p.kind.script("k8s", p.raw, controller=__import__("shlex").split(populate))))


@pytest.mark.parametrize("profile", [PROFILE, EVERY_SETTING], ids=["usual", "every-setting"])
def test_the_controller_objects_are_valid_kubernetes_objects(profile):
    import kubernetes_validate

    objects = controller_objects(profile)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)  # raises on what the server refuses
    job = objects[-1]["spec"]["template"]["spec"]
    [container] = job["containers"]
    assert container["command"] == [
        "djdask", "populate", "mylab.pipeline", "--target", "Segmentation", "-r", "session=3", "--cluster", "k8s",
    ]  # fmt: skip
    assert container["envFrom"] == [{"secretRef": {"name": "datajoint-credentials"}}]
    assert job["serviceAccountName"] == objects[0]["metadata"]["name"] == objects[2]["subjects"][0]["name"]
    assert {"name": "DASK_CONFIG", "value": "/etc/djdask"} in container["env"]
    # The ConfigMap carries the profile: the controller in the pod resolves the same one.
    carried = yaml.safe_load(objects[3]["data"]["djdask.yaml"])["djdask"]["clusters"]["k8s"]
    assert carried == profile
    assert all(o["metadata"]["namespace"] == "lab" for o in objects)
    assert "hunter2" not in yaml.safe_dump_all(objects)


def test_kubernetes_validate_refuses_a_broken_job():
    import kubernetes_validate

    job = controller_objects()[-1]
    job["spec"]["template"]["spec"]["restartPolicy"] = ["Never"]
    job["spec"]["backofflimit"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("node-selector", ["gpu"], "`node-selector` must be a mapping"),
        ("tolerations", {"key": "spot"}, "`tolerations` must be a list"),
        ("tolerations", [{"key": "spot", "efect": "NoSchedule"}], "`tolerations` must be a list"),
    ],
)
def test_bad_pod_settings_name_the_key(setting, value, message):
    with pytest.raises(ProfileError, match=message):
        manifest({**PROFILE, setting: value})


def test_a_profile_name_kubernetes_would_refuse_names_the_setting():
    with pytest.raises(
        ProfileError,
        match=r"'djdask-gpu_pool', which Kubernetes refuses.*djdask\.clusters\.gpu_pool\.name.*'djdask-gpu-pool'",
    ):
        manifest(PROFILE, name="gpu_pool")
    assert manifest({**PROFILE, "name": "gpu-pool"}, name="gpu_pool")["metadata"]["name"] == "gpu-pool"


class _Replicas:
    """Stands for the Kubernetes API behind KubeCluster.scale (no API server runs here): the
    replica counts djdask asks for, in order."""

    status = None

    def __init__(self) -> None:
        self.asked: list[int] = []

    def scale(self, n: int) -> None:
        self.asked.append(n)


def test_kubernetes_workers_scale_to_none_when_idle_and_back_when_keys_arrive():
    """The worker replicas follow the campaign's demand (a following campaign's pools set it
    to none after idle-after): up at once, down to none only once the demand stayed lower for
    scale-down-after, and up again when keys arrive."""
    from djdask.clusters import Demand
    from djdask.clusters.kubernetes import DemandScaler

    demand, replicas = Demand(), _Replicas()
    scaler = DemandScaler(replicas, demand, maximum=4, interval=0.02, after=0.3)
    scaler.start()
    try:
        demand.workers = 6  # more than max-workers: 4
        _wait(lambda: replicas.asked == [4])
        demand.workers = 0  # idle (after idle-after): none, but not at once
        time.sleep(0.15)
        assert replicas.asked == [4]
        _wait(lambda: replicas.asked == [4, 0])
        demand.workers = 2  # new keys: at once
        _wait(lambda: replicas.asked == [4, 0, 2])
    finally:
        scaler.stopped.set()
        scaler.join(5)


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)
