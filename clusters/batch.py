"""The shared part of the batch-system kinds, built on dask-jobqueue.

A kind names its dask-jobqueue classes and submit command as class attributes
(as dask-jobqueue does); settings come from the profile, on top of a
``jobqueue.<name>`` section when the profile names one.  Each job runs
``cores`` single-threaded worker processes: DataJoint allows one ``make()`` at a
time per process.
"""

from __future__ import annotations

import importlib
import re
import shutil
from typing import Any

import dask.config

from orchestrator.errors import ProfileError

__all__ = ["BatchKind"]

#: Profile keys that are djdask's, not dask-jobqueue's.
_OWN_KEYS = {"kind", "jobqueue", "max-jobs", "resources", "lifetime", "lifetime-stagger"}


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class BatchKind:
    """A batch system reached through dask-jobqueue."""

    name = ""
    cluster_class = ""  # "dask_jobqueue:SLURMCluster"
    job_class = ""  # "dask_jobqueue.slurm:SLURMJob"
    submit_command = ""
    walltime_pattern = re.compile(r"^\d+:\d{2}:\d{2}$")
    walltime_example = "04:00:00"
    required = ("cores", "memory")

    def settings(self, profile: str, raw: dict[str, Any]) -> dict[str, Any]:
        """dask-jobqueue keyword arguments from a profile; raise ProfileError on bad input."""
        merged: dict[str, Any] = {}
        if raw.get("jobqueue"):
            section = dask.config.get(f"jobqueue.{raw['jobqueue']}", None)
            if section is None:
                raise ProfileError(
                    f"Profile {profile!r} reuses `jobqueue.{raw['jobqueue']}`, which is not in the dask "
                    f"config. Define it (~/.config/dask/jobqueue.yaml) or remove "
                    f"`djdask.clusters.{profile}.jobqueue`."
                )
            merged.update({k: v for k, v in section.items() if v is not None})
        merged.update({k: v for k, v in raw.items() if k not in _OWN_KEYS})
        for key in self.required:
            if merged.get(key) in (None, ""):
                raise ProfileError(
                    f"Profile {profile!r} ({self.name}) has no `{key}`: every job needs cores and memory. "
                    f"Set `djdask.clusters.{profile}.{key}` in ~/.config/dask/djdask.yaml, for example "
                    f"{{kind: {self.name}, cores: 8, memory: 24GB}}."
                )
        walltime = merged.get("walltime")
        if walltime is not None and not self.walltime_pattern.match(str(walltime)):
            raise ProfileError(
                f"Profile {profile!r} has walltime {walltime!r}, which {self.name} does not read. "
                f"Write `djdask.clusters.{profile}.walltime` as {self.walltime_example!r}."
            )
        kwargs = {k.replace("-", "_"): v for k, v in merged.items()}
        kwargs.setdefault("processes", int(kwargs["cores"]))  # one thread per worker process
        extra = list(kwargs.pop("worker_extra_args", []) or [])
        resources = raw.get("resources")
        if resources:
            extra += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
        if raw.get("lifetime"):
            extra += ["--lifetime", str(raw["lifetime"]), "--lifetime-stagger",
                      str(raw.get("lifetime-stagger", "1m")), "--lifetime-restart"]
        kwargs["worker_extra_args"] = extra
        return kwargs

    def check_submit(self, profile: str) -> None:
        """Refuse a profile whose batch system is not installed here."""
        if shutil.which(self.submit_command) is None:
            raise ProfileError(
                f"Profile {profile!r} submits jobs with `{self.submit_command}`, which is not on this "
                f"machine's PATH. Run djdask on a {self.name} login node, or choose another profile "
                "(`djdask clusters list`)."
            )

    def script(self, profile: str, raw: dict[str, Any], scheduler: str = "tcp://SCHEDULER:8786") -> str:
        """The job script one worker job would be submitted with."""
        kwargs = self.settings(profile, raw)
        job = _load(self.job_class)(scheduler=scheduler, name="djdask-worker", **kwargs)
        return job.job_script()

    def start(self, profile: str, raw: dict[str, Any], workers: int | None = None):
        """Start the scheduler here and a dask-jobqueue cluster that submits jobs as the
        work needs them, up to ``max-jobs``; return ``(client, cluster)``.  ``workers`` is
        for local profiles only."""
        from distributed import Client

        self.check_submit(profile)
        kwargs = self.settings(profile, raw)
        kwargs.setdefault("scheduler_options", {"host": "127.0.0.1"} if raw.get("loopback") else {})
        cluster = _load(self.cluster_class)(**kwargs)
        cluster.adapt(minimum_jobs=0, maximum_jobs=int(raw.get("max-jobs", 10)))
        return Client(cluster), cluster
