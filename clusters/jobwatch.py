"""Worker jobs that never join, explained.

dask-jobqueue submits a job and counts it as a worker to come until that worker
joins the scheduler.  A job that ends first (a ``python`` the compute nodes do
not have, a prologue line that fails, a certificate path the nodes cannot see)
or that waits in the queue is invisible to Dask: the cluster keeps waiting for
it, submits no other, and the campaign would wait for ever.

:class:`JobWatch` follows each job a pool submitted until its worker joins,
asking the batch system what became of it (each kind's
:meth:`~djdask.clusters.batch.BatchKind.job_status`):

- a job that ended before its worker joined is said at once, with the state
  and exit code the batch system gives and the last lines of its output (the
  profile's ``log-directory``, or where the batch system says it wrote them);
  the cluster forgets it, so a new job takes its place;
- after ``max-failed-starts`` such jobs in a row, with no worker ever joined,
  the pool is broken: the watch gives the campaign a paragraph that quotes the
  job's own words and names the likely fix, and the campaign stops (exit 2);
- a job still pending after ``report-pending-after`` is said with the batch
  system's own reason, then again at most every ``REPEAT_PENDING`` seconds;
- a job that has run ``report-pending-after`` and its worker has not joined is
  said with the scheduler's address it tries: a nanny that cannot reach its
  scheduler retries silently until its death timeout.

What the campaign does for workers that die mid-key is not this module's
(:mod:`djdask.campaign.losses`).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JobStatus", "JobWatch", "SubmittedJob", "likely_fix", "tail"]

logger = logging.getLogger(__name__)

#: Seconds between two reports of the same pending job.
REPEAT_PENDING = 600.0
#: A job is young, and looked at every ``interval``, for this many seconds after its submission;
#: then every OLD_JOB_INTERVAL.
YOUNG = 60.0
OLD_JOB_INTERVAL = 5.0
#: Seconds after its submission when a job no status command knows counts as ended.
GONE_AFTER = 30.0
#: A job seen before that no command knows any more is given this long for its accounting
#: record to appear (qacct reads a file the qmaster writes after the job has left qstat).
ACCOUNTING_WAIT = 10.0
#: Lines of a job's output quoted.
QUOTED_LINES = 8
#: What a worker logs while it cannot reach its scheduler (distributed.worker).
WAITING_TO_CONNECT = re.compile(r"Waiting to connect to:\s*(\S+)")


@dataclass
class JobStatus:
    """What a batch system says of one job.  ``state`` is ``pending``, ``running`` or
    ``ended`` (``unknown``: a status command answered, in words not read here); ``said`` is the batch system's own word for it (``PENDING``, ``FAILED``,
    ``qw``, ``EXIT``...); ``reason`` why it waits or why it ended; ``outputs`` the files
    it says the job writes; ``granted`` the walltime and memory it gave the job, where it says."""

    state: str
    said: str = ""
    reason: str = ""
    exit_code: str | None = None
    node: str = ""
    outputs: list[str] = field(default_factory=list)
    granted: dict[str, str] = field(default_factory=dict)  # walltime, memory: what the batch system gave


@dataclass
class SubmittedJob:
    """A job a pool submitted (recorded by the pool's job class as it is taken)."""

    job_id: str
    name: str  # the cluster's name for it; its workers are named after it
    submitted: float  # time.monotonic()
    log_directory: str | None = None
    joined: bool = False
    ended: JobStatus | None = None
    scheduler: str = ""  # the address its worker is told
    seen: bool = False  # a status command knew it
    looked: float = 0.0  # time.monotonic() of the last look
    running_since: float | None = None
    pending_said: float | None = None
    connect_said: bool = False
    missing_since: float | None = None  # time.monotonic() when a job seen before was first known to no command


def tail(paths: Sequence[str], lines: int = QUOTED_LINES) -> tuple[str | None, list[str]]:
    """The last non-empty ``lines`` of the first of ``paths`` that has any (error
    files first), and its path; ``(None, [])`` when none can be read here."""
    readable = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                text = f.read()[-20000:]
        except OSError:
            continue
        kept = [line.rstrip() for line in text.splitlines() if line.strip()]
        if kept:
            readable.append((path, kept[-lines:]))
    # An error file that says something is the job's own words; its output file comes second.
    readable.sort(key=lambda found: not _errors_file(found[0]))
    return readable[0] if readable else (None, [])


def _errors_file(path: str) -> bool:
    """SLURM's and LSF's ``name-ID.err`` (as dask-jobqueue names them), SGE's and PBS's ``name.eID``."""
    base = os.path.basename(path)
    return base.endswith(".err") or re.search(r"\.e\d+$", base) is not None


def likely_fix(profile: str, lines: Sequence[str], raw: dict[str, Any]) -> str:
    """The setting of ``profile`` most likely to be wrong, read from a job's last words."""
    text = "\n".join(lines)
    setting = f"djdask.clusters.{profile}"
    python = str(raw.get("python") or "")
    if re.search(r"No module named '?(distributed|djdask|dask|datajoint)", text):
        return (
            f"the nodes' Python lacks djdask or Dask: set `{setting}.python` to the Python of the environment "
            "where djdask is installed on the compute nodes, or activate it in `job-script-prologue`."
        )
    if python and python in text and re.search(r"No such file|not found|cannot execute|Permission denied", text):
        return (
            f"the compute nodes have no Python at {python}: set `{setting}.python` to a path that exists on the "
            "nodes (the environment where djdask is installed there)."
        )
    if re.search(r"tls|\.pem|ca_file|cert", text, re.I) and re.search(r"does not exist|No such file", text):
        return (
            f"the nodes cannot see the campaign's certificate files: set `{setting}.shared-temp-directory` to a "
            "folder that the login node and the compute nodes share (the same path on both)."
        )
    unreachable = r"Timed out trying to connect|Failed to connect|refused|Timed out starting worker|failure-to-start-<class 'TimeoutError'>"
    if WAITING_TO_CONNECT.search(text) or re.search(unreachable, text):
        return (
            f"the workers cannot reach the scheduler on this host: set `{setting}.interface` to the network "
            f"interface the compute nodes reach this host on, or `{setting}.scheduler-options` "
            "(host, contact_address); a firewall between the nodes and this host must let the port through."
        )
    if not re.search(r"distributed\.|dask", text):
        return (
            f"the job ended before its worker started: check `{setting}.job-script-prologue` (its lines run first) "
            f"and `{setting}.python`; `djdask clusters script {profile}` prints the job script."
        )
    return (
        f"read the job's output above; `djdask clusters script {profile}` prints the job script, "
        f"and `{setting}` holds the settings it is made from."
    )


class JobWatch(threading.Thread):
    """Follows a pool's jobs until their workers join (see the module's docstring).

    ``kind`` is the profile's batch kind (``job_status``), ``jobs`` the pool's submitted
    jobs by name (filled by its job class), ``joined`` returns the names of the workers
    the scheduler has now, ``planned`` the names of the jobs the cluster keeps (one it
    cancelled itself, scaling down, is no failure), ``forget`` drops a job that ended from the cluster, ``say``
    reports a finding, ``fatal`` the paragraph that ends the campaign, ``env`` is the
    batch commands' environment.  A job no status command knows (its record expired) counts
    as ended, at once if a command knew it before, else once ``GONE_AFTER`` seconds passed
    since its submission; one whose status is answered in words not read here is left be."""

    def __init__(
        self,
        kind: Any,
        profile: str,
        raw: dict[str, Any],
        jobs: dict[str, SubmittedJob],
        joined: Callable[[], Sequence[str]],
        planned: Callable[[], Collection[str]],
        forget: Callable[[str], None],
        say: Callable[[str], None],
        fatal: Callable[[str], None],
        *,
        pending_after: float = 60.0,
        max_failed_starts: int = 3,
        interval: float = 1.0,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name="djdask-jobwatch", daemon=True)
        self.kind, self.profile, self.raw, self.jobs = kind, profile, raw, jobs
        self.joined, self.planned, self.forget, self.say, self.give_up = joined, planned, forget, say, fatal
        self.pending_after, self.max_failed_starts, self.interval = pending_after, max_failed_starts, interval
        self.env = env
        self.failed_in_a_row = 0
        self.ever_joined = False
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.check()
            except Exception as err:  # the watch must not end the campaign; it tries again
                logger.debug("Could not follow the jobs of profile %s: %s", self.profile, err)

    def stop(self) -> None:
        self.stopped.set()

    def check(self) -> None:
        """Look once at every job whose worker has not joined."""
        names = list(self.joined())
        planned = self.planned()
        now = time.monotonic()
        waiting: dict[tuple[str, str], list[SubmittedJob]] = {}
        for job in list(self.jobs.values()):
            if job.joined or job.ended is not None:
                continue
            if job.name not in planned:  # the cluster cancelled it (scaled down): not a failure
                job.ended = JobStatus("ended", said="cancelled by the cluster")
                continue
            if any(name == job.name or str(name).startswith(f"{job.name}-") for name in names):
                job.joined, self.ever_joined, self.failed_in_a_row = True, True, 0
                continue
            # A young job is looked at every second (a job that fails at once may be purged
            # from the batch system's memory seconds after: SLURM's MinJobAge), an older one
            # every OLD_JOB_INTERVAL.
            if now - job.looked < (self.interval if now - job.submitted < YOUNG else OLD_JOB_INTERVAL):
                continue
            job.looked = now
            status = self.kind.job_status(job.job_id, self.env)
            if status is not None and status.state == "unknown":
                continue  # answered in words not read here: leave the job be, never lose it
            if status is None:
                # No command knows it: its record expired (a site's MinJobAge), before the
                # first look if it ended at once; just submitted, it may not be listed yet;
                # just ended, its accounting may not be written yet (Grid Engine's qacct).
                job.missing_since = job.missing_since or now
                if not job.seen and now - job.submitted < GONE_AFTER:
                    continue
                if job.seen and now - job.missing_since < ACCOUNTING_WAIT:
                    continue
                status = JobStatus("ended", said="no record of it any more")
            else:
                job.missing_since = None
            job.seen = True
            if status.state == "ended":
                self._ended(job, status)
            elif status.state == "pending" and now - job.submitted >= self.pending_after:
                if job.pending_said is None or now - job.pending_said >= REPEAT_PENDING:
                    job.pending_said = now
                    waiting.setdefault((status.said, status.reason), []).append(job)
            elif status.state == "running":
                job.running_since = job.running_since or now
                if not job.connect_said and now - job.running_since >= self.pending_after:
                    self._running(job, status, now)
        for (said, reason), jobs in waiting.items():
            self.say(self._pending(jobs, said, reason, now))

    def _outputs(self, job: SubmittedJob, status: JobStatus) -> list[str]:
        paths = [p.split(":", 1)[1] if re.match(r"^[\w.-]+:/", p) else p for p in status.outputs]
        if job.log_directory:
            own = re.compile(rf"(?<!\d){re.escape(job.job_id)}(?!\d)")  # job 12, not job 112
            found = glob.glob(os.path.join(glob.escape(job.log_directory), f"*{job.job_id}*"))
            paths += sorted(p for p in found if own.search(os.path.basename(p)))
        return list(dict.fromkeys(p for p in paths if p))

    def _ended(self, job: SubmittedJob, status: JobStatus) -> None:
        job.ended = status
        self.forget(job.name)
        path, lines = tail(self._outputs(job, status))
        self.failed_in_a_row += 1
        how = f"{self.kind.name} says {status.said or 'it ended'}"
        if status.exit_code not in (None, ""):
            how += f", exit code {status.exit_code}"
        if status.reason:
            how += f" ({status.reason})"
        where = f"{job.job_id}" + (f" on {status.node}" if status.node else "")
        if path:
            words = f"Its output ({path}) ends:\n" + "\n".join(f"    {line}" for line in lines)
        else:
            words = "Its output could not be read here" + (
                f" (the batch system says {', '.join(status.outputs)})" if status.outputs else ""
            )
            words += "; set the profile's `log-directory` to a folder this host and the nodes share."
        self.say(f"Worker job {where} ended before its worker joined the scheduler: {how}. {words}")
        if not self.ever_joined and self.failed_in_a_row >= self.max_failed_starts:
            self.give_up(
                f"Profile {self.profile!r}: {self.failed_in_a_row} worker jobs in a row ended before their worker "
                f"joined the scheduler, and none ever did; the campaign stops (its keys are released). "
                f"The last, job {where}: {how}. {words}\nLikely fix: {likely_fix(self.profile, lines, self.raw)}"
            )
            self.stop()

    def _pending(self, jobs: list[SubmittedJob], said: str, reason: str, now: float) -> str:
        waited = max(now - job.submitted for job in jobs)
        which = (
            f"Worker job {jobs[0].job_id} has"
            if len(jobs) == 1
            else f"Worker jobs {', '.join(j.job_id for j in jobs)} have"
        )
        return (
            f"{which} waited {waited:.0f} s in the queue: {self.kind.name} says {said or 'pending'} "
            f"({reason or 'no reason given'}). The campaign waits; Ctrl-C stops it and cancels its jobs."
        )

    def _running(self, job: SubmittedJob, status: JobStatus, now: float) -> None:
        """A job that has run ``pending_after`` and its worker has not joined: most often
        its nanny cannot reach the scheduler (it retries silently until its death timeout)."""
        job.connect_said = True
        _, lines = tail(self._outputs(job, status), lines=50)
        waiting = next((found for line in reversed(lines) if (found := WAITING_TO_CONNECT.search(line))), None)
        address = waiting.group(1) if waiting else job.scheduler
        where = f" on {status.node}" if status.node else ""
        quoted = f" (its log: {waiting.group(0)!r})" if waiting else ""
        self.say(
            f"Worker job {job.job_id} has run{where} for {now - job.running_since:.0f} s, but its worker has not "
            f"joined: it cannot reach the scheduler at {address}{quoted}, or it starts slowly (the job's output "
            "says which). Likely fix, if it cannot: "
            + likely_fix(self.profile, [f"Waiting to connect to: {address}"], self.raw)
        )


def run_command(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 30) -> str | None:
    """A batch command's output, or None when it failed or is not here (the job is not known to it)."""
    try:
        done = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and done.stdout.strip() else None
