"""The `pbs` profile kind: workers as PBS jobs (dask-jobqueue)."""

from __future__ import annotations

import re

from .batch import BatchKind
from .jobwatch import JobStatus

__all__ = ["PBSKind", "parse_qstat_f"]

#: PBS's job states (qstat(1B)): queued, held, waiting, in transit, suspended / running,
#: exiting, array begun / completed (Torque), finished (PBS Pro), expired.
_PENDING, _RUNNING = set("QHWTSU"), set("REB")


def parse_qstat_f(text: str) -> JobStatus | None:
    """A job's status from ``qstat -f ID`` (or PBS Pro's ``qstat -x -f ID`` once it ended):
    ``name = value`` lines, long values continued on tab-indented lines."""
    joined = re.sub(r"\n\t", "", text)
    fields = dict(re.findall(r"^\s+([\w.]+) = (.*)$", joined, re.M))
    said = fields.get("job_state", "").strip()
    if not said:
        return None
    state = "pending" if said in _PENDING else "running" if said in _RUNNING else "ended"
    node = fields.get("exec_host", "").split("/")[0].split("+")[0]
    outputs = [fields[k].strip() for k in ("Error_Path", "Output_Path") if fields.get(k)]
    exit_code = fields.get("exit_status", fields.get("Exit_status"))
    granted = {
        key: fields[f"Resource_List.{name}"].strip()
        for key, name in (("walltime", "walltime"), ("memory", "mem"))
        if fields.get(f"Resource_List.{name}")
    }
    return JobStatus(
        state, said, fields.get("comment", "").strip(), exit_code if state == "ended" else None, node, outputs, granted
    )


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
    # What became of a worker job: qstat -f while it is known, PBS Pro's job history (-x) after.
    status_commands = (("qstat", "-f", "{}"), ("qstat", "-x", "-f", "{}"))

    def parse_status(self, index: int, text: str) -> JobStatus | None:
        return parse_qstat_f(text)
