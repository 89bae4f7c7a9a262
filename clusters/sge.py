"""The `sge` profile kind: workers as SGE jobs (dask-jobqueue)."""

from __future__ import annotations

from .batch import BatchKind

__all__ = ["SGEKind"]


class SGEKind(BatchKind):
    name = "sge"
    cluster_class = "dask_jobqueue:SGECluster"
    job_class = "dask_jobqueue.sge:SGEJob"
    submit_command = "qsub"
    export_directives = ("-V",)  # qsub starts a job with none of the submitting environment: ``-V`` hands it over
