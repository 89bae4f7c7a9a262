"""The `slurm` profile kind: workers as SLURM jobs (dask-jobqueue)."""

from __future__ import annotations

from .batch import BatchKind

__all__ = ["SLURMKind"]


class SLURMKind(BatchKind):
    name = "slurm"
    cluster_class = "dask_jobqueue:SLURMCluster"
    job_class = "dask_jobqueue.slurm:SLURMJob"
    submit_command = "sbatch"
    # The controller's own job (djdask submit).
    submit_options = ("--parsable",)
    cancel_command = "scancel"
    directive_prefix = "#SBATCH"
    name_directive = "--job-name={}"
    log_directives = ("--output={}", "--open-mode=append")
    walltime_directive = "--time={}"
    memory_directive = "--mem={}"
    cores_directive = "--cpus-per-task=1"
    queue_directive = "--partition={}"
    account_directive = "--account={}"
    chdir_directive = "--chdir={}"
