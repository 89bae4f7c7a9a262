"""The `pbs` profile kind: workers as PBS jobs (dask-jobqueue)."""

from __future__ import annotations

from .batch import BatchKind

__all__ = ["PBSKind"]


class PBSKind(BatchKind):
    name = "pbs"
    cluster_class = "dask_jobqueue:PBSCluster"
    job_class = "dask_jobqueue.pbs:PBSJob"
    submit_command = "qsub"
    export_directives = ("-V",)  # qsub starts a job with none of the submitting environment: ``-V`` hands it over
