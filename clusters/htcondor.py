"""The `htcondor` profile kind: workers as HTCondor jobs (dask-jobqueue)."""

from __future__ import annotations

from typing import Any

from .batch import BatchKind
from .jobwatch import JobStatus

__all__ = ["HTCondorKind", "parse_condor_attributes"]

#: The job ClassAd attributes read, in order (``-af:t``: tab-separated, ``undefined`` when unset).
ATTRIBUTES = ("JobStatus", "ExitCode", "HoldReason", "LastRejMatchReason", "RemoteHost", "LastRemoteHost", "Err", "Out")
#: HTCondor's JobStatus codes: idle, running, removed, completed, held, transferring output, suspended.
_STATES = {
    "1": ("pending", "Idle"),
    "2": ("running", "Running"),
    "3": ("ended", "Removed"),
    "4": ("ended", "Completed"),
    "5": ("pending", "Held"),
    "6": ("running", "Transferring output"),
    "7": ("pending", "Suspended"),
}


def parse_condor_attributes(text: str) -> JobStatus | None:
    """A job's status from ``condor_q ID -af:t`` (or ``condor_history``) of :data:`ATTRIBUTES`."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    values = dict(zip(ATTRIBUTES, (None if v == "undefined" else v for v in line.split("\t"))))
    if values.get("JobStatus") not in _STATES:
        return None
    state, said = _STATES[values["JobStatus"]]
    reason = values.get("HoldReason") if said == "Held" else values.get("LastRejMatchReason")
    node = (values.get("RemoteHost") or values.get("LastRemoteHost") or "").split("@")[-1]
    outputs = [v for v in (values.get("Err"), values.get("Out")) if v and v != "/dev/null"]
    return JobStatus(state, said, reason or "", values.get("ExitCode") if state == "ended" else None, node, outputs)


class HTCondorKind(BatchKind):
    name = "htcondor"
    cluster_class = "dask_jobqueue:HTCondorCluster"
    job_class = "dask_jobqueue.htcondor:HTCondorJob"
    submit_command = "condor_submit"
    required = ("cores", "memory", "disk")
    # What became of a worker job: the queue while it is there, the job history after.
    status_commands = (
        ("condor_q", "{}", "-af:t", *ATTRIBUTES),
        ("condor_history", "{}", "-limit", "1", "-af:t", *ATTRIBUTES),
    )

    def parse_status(self, index: int, text: str) -> JobStatus | None:
        return parse_condor_attributes(text)

    def export_environment(self, kwargs: dict[str, Any]) -> None:
        """HTCondor starts a job with none of the submitting environment: ``getenv``."""
        directives = dict(kwargs.get("job_extra_directives") or {})
        directives.setdefault("getenv", "True")
        kwargs["job_extra_directives"] = directives
