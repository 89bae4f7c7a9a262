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
    # The controller's own job (djdask submit).
    submit_options = ("-terse",)
    cancel_command = "qdel"
    directive_prefix = "#$"
    name_directive = "-N {}"
    log_directives = ("-o {}", "-j y")
    walltime_directive = "-l h_rt={}"
    memory_directive = "-l h_vmem={}"
    queue_directive = "-q {}"
    account_directive = "-P {}"
    account_key = "project"  # dask-jobqueue's SGEJob: `project`, written as -P
    chdir_directive = "-wd {}"
