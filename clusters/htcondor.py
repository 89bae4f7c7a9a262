"""The `htcondor` profile kind: workers as HTCondor jobs (dask-jobqueue)."""

from __future__ import annotations

from .batch import BatchKind

__all__ = ["HTCondorKind"]


class HTCondorKind(BatchKind):
    name = "htcondor"
    cluster_class = "dask_jobqueue:HTCondorCluster"
    job_class = "dask_jobqueue.htcondor:HTCondorJob"
    submit_command = "condor_submit"
    required = ("cores", "memory", "disk")
