"""The `sge` profile kind: workers as SGE jobs (dask-jobqueue)."""

from __future__ import annotations

import re

from .batch import BatchKind
from .jobwatch import JobStatus, run_command

__all__ = ["SGEKind", "parse_qacct", "parse_qstat_line", "pending_reason"]


def parse_qstat_line(text: str, job_id: str) -> JobStatus | None:
    """Job ``job_id``'s status from ``qstat -u '*'`` (a table: job-ID, prior, name, user,
    state, date, time, queue, slots); None when it is not listed."""
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 5 and cells[0] == job_id:
            said = cells[4]
            # q: queued, h: held, w: waiting; E with q: the job's start failed and it waits in error.
            state = "pending" if "q" in said or "h" in said else "running"
            node = cells[7].split("@", 1)[1] if len(cells) >= 8 and "@" in cells[7] else ""
            return JobStatus(state, said, node=node)
    return None


def parse_qacct(text: str) -> JobStatus | None:
    """An ended job's status from ``qacct -j ID`` (its accounting record)."""
    fields = dict(re.findall(r"^(\w+)\s+(.*?)\s*$", text, re.M))
    if "exit_status" not in fields:
        return None
    failed = fields.get("failed", "0")
    said = "failed" if failed.split()[0] != "0" else "ended"
    reason = failed if failed.split()[0] != "0" else ""
    return JobStatus("ended", said, reason, fields["exit_status"].split()[0], fields.get("hostname", ""))


def pending_reason(detail: str, said: str) -> str:
    """Why a queued job waits, from ``qstat -j ID`` (``detail``) and its state letters: the
    scheduler's own words, or, on a site that keeps them off (``schedd_job_info false``), its hold
    or its start time."""
    reasons = re.findall(r"^(?:scheduling info|error reason\s*\d*):\s*(.+)$", detail, re.M)
    reason = "; ".join(r.strip() for r in reasons if "turned off" not in r)
    start = re.search(r"^execution_time:\s*(.+?)\s*$", detail, re.M)
    if reason:
        return reason
    if "h" in said:
        return "held; qrls releases it"
    return f"its start time is {start.group(1)}" if start else ""


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

    def job_status(self, job_id: str, env: dict[str, str] | None = None) -> JobStatus | None:
        """qstat while the job is queued or running (with its scheduling info or error reason
        from ``qstat -j`` when it waits), then its accounting (qacct)."""
        listed = run_command(["qstat", "-u", "*"], env)
        status = None if listed is None else parse_qstat_line(listed, job_id)
        if status is None:
            accounted = run_command(["qacct", "-j", job_id], env)
            return None if accounted is None else parse_qacct(accounted)
        detail = run_command(["qstat", "-j", job_id], env) or ""
        if status.state == "pending":
            status.reason = pending_reason(detail, status.said)
        asked = " ".join(re.findall(r"^hard resource_list:\s*(.*)$", detail, re.M))
        limits = dict(re.findall(r"(h_rt|h_vmem)=([^,\s]+)", asked))
        status.granted = {
            key: limits[name] for key, name in (("walltime", "h_rt"), ("memory", "h_vmem")) if name in limits
        }
        return status
