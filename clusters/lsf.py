"""The `lsf` profile kind: workers as LSF jobs (dask-jobqueue)."""

from __future__ import annotations

import re

from .batch import BatchKind
from .jobwatch import JobStatus

__all__ = ["LSFKind", "parse_bjobs_l"]

_PENDING, _RUNNING = {"PEND", "PSUSP"}, {"RUN", "USUSP", "SSUSP", "PROV", "WAIT"}


def parse_bjobs_l(text: str) -> JobStatus | None:
    """A job's status from ``bjobs -l ID`` (long values continued on lines of 21 spaces)."""
    joined = re.sub(r"\n {21}", "", text)
    found = re.search(r"Status <(\w+)>", joined)
    if not found:
        return None
    said = found.group(1)
    state = "pending" if said in _PENDING else "running" if said in _RUNNING else "ended"
    exit_code = re.search(r"Exited with exit code (\d+)", joined)
    reasons = re.search(r"PENDING REASONS:\s*\n(.*?)(?:\n\s*\n|\Z)", joined, re.S)
    node = re.search(r"Started \d+ Task\(s\) on Host\(s\) <([^>]+)>|Started on <([^>]+)>", joined)
    outputs = [m.group(1) for m in re.finditer(r"(?:Error|Output) File <([^>]+)>", joined)]
    return JobStatus(
        state,
        said,
        " ".join(reasons.group(1).split()) if reasons and state == "pending" else "",
        (exit_code.group(1) if exit_code else "0" if said == "DONE" else None) if state == "ended" else None,
        next((g for g in node.groups() if g), "") if node else "",
        outputs,
    )


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
    # What became of a worker job: bjobs -l knows an ended job for CLEAN_PERIOD (an hour by default).
    status_commands = (("bjobs", "-l", "{}"),)

    def parse_status(self, index: int, text: str) -> JobStatus | None:
        return parse_bjobs_l(text)

    def walltime_seconds(self, walltime: str) -> float:
        hours, minutes = (int(p) for p in str(walltime).split(":"))
        return hours * 3600 + minutes * 60
