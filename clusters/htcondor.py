"""The `htcondor` profile kind: workers as HTCondor jobs (dask-jobqueue)."""

from __future__ import annotations

from typing import Any

from .batch import BatchKind

__all__ = ["HTCondorKind"]


class HTCondorKind(BatchKind):
    name = "htcondor"
    cluster_class = "dask_jobqueue:HTCondorCluster"
    job_class = "dask_jobqueue.htcondor:HTCondorJob"
    submit_command = "condor_submit"
    required = ("cores", "memory", "disk")

    def export_environment(self, kwargs: dict[str, Any]) -> None:
        """HTCondor starts a job with none of the submitting environment: ``getenv``."""
        directives = dict(kwargs.get("job_extra_directives") or {})
        directives.setdefault("getenv", "True")
        kwargs["job_extra_directives"] = directives
