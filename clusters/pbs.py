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
    # The controller's own job (djdask submit).
    cancel_command = "qdel"
    log_on_command_line = True
    directive_prefix = "#PBS"
    name_directive = "-N {}"
    log_directives = ("-o {}", "-j oe")
    walltime_directive = "-l walltime={}"
    memory_directive = "-l mem={}"
    cores_directive = "-l select=1:ncpus=1"
    queue_directive = "-q {}"
    account_directive = "-A {}"
