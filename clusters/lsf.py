"""The `lsf` profile kind: workers as LSF jobs (dask-jobqueue)."""

from __future__ import annotations

import re

from .batch import BatchKind

__all__ = ["LSFKind"]


class LSFKind(BatchKind):
    name = "lsf"
    cluster_class = "dask_jobqueue:LSFCluster"
    job_class = "dask_jobqueue.lsf:LSFJob"
    submit_command = "bsub"
    # The controller's own job (djdask submit).
    cancel_command = "bkill"
    script_on_stdin = True
    directive_prefix = "#BSUB"
    name_directive = "-J {}"
    log_directives = ("-o {}",)
    walltime_directive = "-W {}"
    memory_directive = "-M {}"
    cores_directive = "-n 1"
    queue_directive = "-q {}"
    account_directive = "-P {}"
    account_key = "project"  # dask-jobqueue's LSFJob: `project`, written as -P
    chdir_directive = "-cwd {}"
    walltime_pattern = re.compile(r"^\d+:\d{2}$")  # LSF's -W takes hours:minutes
    walltime_example = "04:00"

    def walltime_seconds(self, walltime: str) -> float:
        hours, minutes = (int(p) for p in str(walltime).split(":"))
        return hours * 3600 + minutes * 60
