"""The `kubernetes` kind: the DaskCluster manifest it would create, checked offline
(no Kubernetes API server can run here)."""

from __future__ import annotations

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
    with pytest.raises(ProfileError, match=r"unknown setting\(s\) replicas"):
        manifest({**PROFILE, "replicas": 4})
