"""The `slurm` profile kind: workers as SLURM jobs (dask-jobqueue)."""

from __future__ import annotations

import re

from .batch import BatchKind
from .jobwatch import JobStatus

__all__ = ["SLURMKind", "parse_scontrol"]

#: SLURM's job states (squeue(1), "JOB STATE CODES") as djdask's three.
_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}


def parse_scontrol(text: str) -> JobStatus | None:
    """A job's status from ``scontrol show job -o ID`` (one line of ``Key=Value`` fields)."""
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    said = fields.get("JobState")
    if not said:
        return None
    state = "pending" if said in _PENDING else "running" if said in _RUNNING else "ended"
    reason = fields.get("Reason", "")
    node = fields.get("BatchHost") or fields.get("NodeList", "")
    outputs = [fields[k] for k in ("StdErr", "StdOut") if fields.get(k)]
    granted = {"walltime": fields.get("TimeLimit", ""), "memory": fields.get("MinMemoryNode", "")}
    return JobStatus(
        state,
        said,
        "" if reason in ("None", "(null)") else reason,
        fields.get("ExitCode") if state == "ended" else None,
        "" if node in ("(null)", "None") else node,
        outputs,
        {k: v for k, v in granted.items() if v and v not in ("UNLIMITED", "0")},
    )


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
    # What became of a worker job: scontrol keeps an ended job for MinJobAge (300 s by default).
    status_commands = (("scontrol", "show", "job", "-o", "{}"),)

    def parse_status(self, index: int, text: str) -> JobStatus | None:
        return parse_scontrol(text)
