"""The `slurm` profile kind: workers as SLURM jobs (dask-jobqueue)."""

from __future__ import annotations

from .batch import BatchKind

__all__ = ["SLURMKind"]


class SLURMKind(BatchKind):
    name = "slurm"
    cluster_class = "dask_jobqueue:SLURMCluster"
    job_class = "dask_jobqueue.slurm:SLURMJob"
    submit_command = "sbatch"
