"""The shared part of the batch-system kinds, built on dask-jobqueue.

A kind names its dask-jobqueue classes and submit command as class attributes
(as dask-jobqueue does); settings come from the profile, on top of a
``jobqueue.<name>`` section when the profile names one.  Each job runs
``cores`` single-threaded worker processes: DataJoint allows one ``make()`` at a
time per process.

Jobs are submitted as the campaign's pending work needs them (never more
workers than pending and running keys), up to ``max-jobs`` jobs.  Workers
retire before their walltime: ``lifetime`` (default: the walltime less a
margin) with a random ``lifetime-stagger``, after which a worker starts no new
``make()`` and its job ends; jobs are submitted to replace it while work remains.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed import Client
from distributed.core import Status

from djdask.config import namespace as config
from djdask.errors import ProfileError, SubmitRefused
from djdask.worker.executor import DATABASE_ENV, LIFETIME_ENV, STAGGER_ENV
from djdask.worker.split import COMPUTE_RESOURCE

from .credentials import without_credentials, without_database
from .jobwatch import JobStatus, JobWatch, SubmittedJob, run_command
from .keys import signature_keys
from .paths import controller_path
from .scaling import Demand, DemandAdaptive
from .security import secure_scheduler, security_of

__all__ = ["BatchKind", "lifetime_for"]

#: Profile keys that are djdask's, not dask-jobqueue's.
_OWN_KEYS = frozenset(
    {
        "kind",
        "jobqueue",
        "max-jobs",
        "resources",
        "lifetime",
        "lifetime-stagger",
        "scale-down-after",
        "max-failed-starts",
        "report-pending-after",
        "security",
        "shared-temp-directory",
        "dashboard-address",
        "export-environment",
        "database",
        "database-workers",
        "pass-environment",
    }
)

#: dask-jobqueue keywords naming a path that the job script carries, made absolute on the
#: controller (``controller_path``); True: the path is the node's alone, and a leading
#: ``$VARIABLE`` (``local-directory: $TMPDIR``) is left for the node's shell.
_PATHS = {"log-directory": False, "local-directory": True, "python": True}


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _reporting_job(job_class: type, demand: Demand, environment: dict[str, str] | None = None) -> type:
    """``job_class`` that reports each submission, taken (with its job id) or refused, to ``demand``;
    with ``environment``, its commands (the submission too) run with that environment only."""

    class ReportingJob(job_class):
        if environment is not None:

            @staticmethod
            async def _call(cmd, **kwargs):
                kwargs.setdefault("env", environment)
                return await job_class._call(cmd, **kwargs)

        async def start(self):
            try:
                await super().start()
            except Exception as err:
                demand.submit_errors.append(str(err).strip())
                self.status = Status.failed  # nothing to cancel when the cluster closes
                raise SubmitRefused(str(err)) from None
            demand.submitted += 1
            demand.jobs[self.name] = SubmittedJob(
                str(self.job_id),
                str(self.name),
                time.monotonic(),
                getattr(self, "log_directory", None),
                scheduler=str(getattr(self, "scheduler", "") or ""),
            )

    ReportingJob.__name__ = ReportingJob.__qualname__ = job_class.__name__
    return ReportingJob


def lifetime_for(walltime_s: float) -> tuple[float, float]:
    """``(lifetime, stagger)`` in seconds for a job of ``walltime_s``: a worker retires
    ``lifetime +- stagger`` after it starts, leaving a margin of a tenth of the
    walltime (at most 5 minutes) for its last make() call."""
    stagger = min(0.05 * walltime_s, 120.0)
    margin = min(0.10 * walltime_s, 300.0)
    return walltime_s - margin - stagger, stagger


class BatchKind:
    """A batch system reached through dask-jobqueue."""

    name = ""
    cluster_class = ""  # "dask_jobqueue:SLURMCluster"
    job_class = ""  # "dask_jobqueue.slurm:SLURMJob"
    submit_command = ""
    walltime_pattern = re.compile(r"^\d+:\d{2}:\d{2}$")
    walltime_example = "04:00:00"
    required = ("cores", "memory")
    #: Job directives that hand the submitting shell's environment (the database's
    #: DJ_* settings among it) to the job, where the batch system does not by default.
    export_directives: tuple[str, ...] = ()
    #: A campaign's controller as a job of its own (``djdask submit``): the options of
    #: ``submit_command`` for a job script, the command that cancels a job, the script's
    #: directive prefix, and how each directive is written (``{}`` takes the value; None: the
    #: kind has no such directive).  A kind without a ``directive_prefix`` runs no controller.
    submit_options: tuple[str, ...] = ()
    cancel_command = ""
    directive_prefix = ""
    name_directive = ""
    log_directives: tuple[str, ...] = ()
    walltime_directive = ""
    memory_directive = ""
    cores_directive: str | None = None
    queue_directive = ""
    account_directive = ""
    #: The profile key ``account_directive`` reads: the one the kind's dask-jobqueue job class
    #: takes, so that the controller's job and the workers' are charged alike.
    account_key = "account"
    chdir_directive: str | None = None
    #: Give the log directives on the submit command line too (SLURM's PBS wrappers hand sbatch
    #: their own -o/-e, which win over the script's).
    log_on_command_line = False
    #: The submit command reads the script on its standard input (bsub), not as an argument.
    script_on_stdin = False

    def jobqueue_keys(self) -> frozenset[str]:
        """The keys dask-jobqueue takes for this kind, read from its classes' signatures."""
        return signature_keys(_load(self.cluster_class), _load(self.job_class))

    def accepted_keys(self) -> frozenset[str]:
        """The keys a profile of this kind takes: dask-jobqueue's and djdask's own."""
        return self.jobqueue_keys() | _OWN_KEYS

    def walltime_seconds(self, walltime: str) -> float:
        """Seconds in a walltime this kind reads (``H:MM:SS``; LSF overrides for ``H:MM``)."""
        hours, minutes, seconds = (int(p) for p in str(walltime).split(":"))
        return hours * 3600 + minutes * 60 + seconds

    def settings(self, profile: str, raw: dict[str, Any]) -> dict[str, Any]:
        """dask-jobqueue keyword arguments from a profile; raise ProfileError on bad input."""
        merged: dict[str, Any] = {}
        if raw.get("jobqueue"):
            section = dask.config.get(f"jobqueue.{raw['jobqueue']}", None)
            if section is None:
                raise ProfileError(
                    f"Profile {profile!r} reuses `jobqueue.{raw['jobqueue']}`, which is not in the dask "
                    f"config. Define it (~/.config/dask/jobqueue.yaml) or remove "
                    f"`djdask.clusters.{profile}.jobqueue`."
                )
            merged.update({k: v for k, v in section.items() if v is not None})
        merged.update({k: v for k, v in raw.items() if k not in _OWN_KEYS})
        for key, node_only in _PATHS.items():
            # Unset here, dask-jobqueue reads jobqueue.<kind>.<key>: that path is made absolute too.
            value = merged.get(key) or dask.config.get(f"jobqueue.{self.name}.{key}", None)
            if value and not (key == "python" and os.sep not in str(value)):  # `python3`: the node's PATH finds it
                merged[key] = controller_path(value, node_variables=node_only)
        for key in self.required:
            if merged.get(key) in (None, ""):
                raise ProfileError(
                    f"Profile {profile!r} ({self.name}) has no `{key}`: every job needs cores and memory. "
                    f"Set `djdask.clusters.{profile}.{key}` in ~/.config/dask/djdask.yaml, for example "
                    f"{{kind: {self.name}, cores: 8, memory: 24GB}}."
                )
        walltime = merged.get("walltime")
        if walltime is not None and not self.walltime_pattern.match(str(walltime)):
            raise ProfileError(
                f"Profile {profile!r} has walltime {walltime!r}, which {self.name} does not read. "
                f"Write `djdask.clusters.{profile}.walltime` as {self.walltime_example!r}."
            )
        kwargs = {k.replace("-", "_"): v for k, v in merged.items()}
        kwargs.setdefault("processes", int(kwargs["cores"]))  # one thread per worker process
        extra = list(kwargs.pop("worker_extra_args", []) or [])
        resources = dict(raw.get("resources") or {})
        if without_database(raw):  # make_compute only: no connection, no credential (djdask.campaign.split)
            resources[COMPUTE_RESOURCE] = 1
            kwargs["job_script_prologue"] = [*(kwargs.get("job_script_prologue") or []), f"export {DATABASE_ENV}=none"]
        if resources:
            extra += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
        kwargs["worker_extra_args"] = extra
        if raw.get("export-environment", True):
            self.export_environment(kwargs)

        lifetime = self.lifetime(profile, raw, walltime)
        if lifetime is not None:
            prologue = list(kwargs.get("job_script_prologue") or [])
            prologue += [f"export {LIFETIME_ENV}={lifetime[0]:.0f}", f"export {STAGGER_ENV}={lifetime[1]:.0f}"]
            kwargs["job_script_prologue"] = prologue
        return kwargs

    def export_environment(self, kwargs: dict[str, Any]) -> None:
        """Add this kind's ``export_directives`` to the job's directives (once)."""
        directives = list(kwargs.get("job_extra_directives") or [])
        kwargs["job_extra_directives"] = directives + [d for d in self.export_directives if d not in directives]

    def lifetime(self, profile: str, raw: dict[str, Any], walltime: Any) -> tuple[float, float] | None:
        """``(lifetime, stagger)`` seconds of a worker: the profile's, else from the walltime."""
        try:
            if raw.get("lifetime"):
                lifetime = parse_timedelta(raw["lifetime"])
                stagger = parse_timedelta(raw.get("lifetime-stagger") or min(0.05 * lifetime, 120.0))
                return lifetime, stagger
        except (ValueError, KeyError, TypeError):
            raise ProfileError(
                f"Profile {profile!r} has lifetime {raw.get('lifetime')!r} or lifetime-stagger "
                f'{raw.get("lifetime-stagger")!r}, which are not durations. Write them like "55m" or "30s".'
            ) from None
        if walltime is None:
            return None
        return lifetime_for(self.walltime_seconds(walltime))

    #: Commands that tell what became of one job (``{}`` takes its id), tried in order until
    #: one knows it: its state while queued or running, then the batch system's accounting.
    status_commands: tuple[tuple[str, ...], ...] = ()

    def parse_status(self, index: int, text: str) -> JobStatus | None:
        """A job's status from the output of ``status_commands[index]``; None: not known there."""
        return None

    def job_status(self, job_id: str, env: dict[str, str] | None = None) -> JobStatus | None:
        """What the batch system says of job ``job_id``; None when none of its commands knows
        it (each failed or printed nothing); ``unknown`` when one answered in words not read here."""
        unread = False
        for index, command in enumerate(self.status_commands):
            text = run_command([part.format(job_id) for part in command], env)
            if text is None:
                continue
            status = self.parse_status(index, text)
            if status is not None:
                return status
            unread = True
        return JobStatus("unknown") if unread else None

    def check_submit(self, profile: str) -> None:
        """Refuse a profile whose batch system is not installed here."""
        if shutil.which(self.submit_command) is None:
            raise ProfileError(
                f"Profile {profile!r} submits jobs with `{self.submit_command}`, which is not on this "
                f"machine's PATH. Run djdask on a {self.name} login node, or choose another profile "
                "(`djdask clusters list`)."
            )

    def validate(self, profile: str, raw: dict[str, Any]) -> None:
        self.settings(profile, raw)
        security_of(profile, raw)
        self.check_submit(profile)

    def watch(self, profile: str, raw: dict[str, Any], cluster: Any, demand: Demand) -> JobWatch:
        """Start following ``cluster``'s jobs until their workers join (:mod:`djdask.clusters.jobwatch`)."""

        def joined() -> list[str]:
            return [str(w.get("name")) for w in dict(cluster.scheduler_info.get("workers") or {}).values()]

        def forget(name: str) -> None:
            # The cluster counts a job as a worker to come until its worker joins: one that
            # ended is dropped from its plan, and adaptive scaling submits another.
            cluster.loop.add_callback(cluster.worker_spec.pop, name, None)

        try:
            pending_after = parse_timedelta(
                raw.get("report-pending-after", config.get("cluster-defaults.report-pending-after"))
            )
            max_failed = int(raw.get("max-failed-starts", config.get("cluster-defaults.max-failed-starts")))
        except (ValueError, TypeError):
            raise ProfileError(
                f"Profile {profile!r} has report-pending-after {raw.get('report-pending-after')!r} or "
                f'max-failed-starts {raw.get("max-failed-starts")!r}: write a duration like "60s" and a whole number.'
            ) from None

        def fatal(paragraph: str) -> None:
            demand.fatal = paragraph

        watch = JobWatch(
            self,
            profile,
            raw,
            demand.jobs,
            joined,
            lambda: set(cluster.worker_spec),
            forget,
            demand.findings.append,
            fatal,
            pending_after=pending_after,
            max_failed_starts=max_failed,
        )
        watch.start()
        return watch

    def script(self, profile: str, raw: dict[str, Any], scheduler: str = "tcp://SCHEDULER:8786") -> str:
        """The job script one worker job would be submitted with."""
        kwargs = self.settings(profile, raw)
        kwargs.pop("scheduler_options", None)
        job = _load(self.job_class)(scheduler=scheduler, name="djdask-worker", **kwargs)
        return job.job_script()

    def start(self, profile: str, raw: dict[str, Any], workers: int | None = None, demand: Demand | None = None):
        """Start the scheduler here and a dask-jobqueue cluster that submits jobs as the
        work needs them, up to ``max-jobs``; return ``(client, cluster)``.  ``workers`` is
        for local profiles only.  Without a ``demand``, Dask's own adaptive scaling."""
        self.check_submit(profile)
        kwargs = self.settings(profile, raw)
        kwargs.update(secure_scheduler(profile, raw, kwargs.get("scheduler_options")))
        if demand is not None:
            environment = None
            if without_database(raw):  # the jobs get none of this host's credentials
                environment = without_credentials(dict(os.environ), raw.get("pass-environment") or ())
            kwargs["job_cls"] = _reporting_job(_load(self.job_class), demand, environment)
        try:
            cluster = _load(self.cluster_class)(**kwargs)
        except OSError as err:  # the scheduler could not listen where the profile says
            raise ProfileError(
                f"Profile {profile!r}: the scheduler could not start ({err}). Check "
                f"`djdask.clusters.{profile}.scheduler-options` (host, port) and `interface`."
            ) from None
        try:
            max_jobs = int(raw.get("max-jobs", config.get("cluster-defaults.max-jobs")))
            if demand is None:
                cluster.adapt(minimum_jobs=0, maximum_jobs=max_jobs)
            else:
                demand.watch = self.watch(profile, raw, cluster, demand)
                after = parse_timedelta(raw.get("scale-down-after", config.get("cluster-defaults.scale-down-after")))
                cluster.adapt(
                    minimum_jobs=0,
                    maximum_jobs=max_jobs,
                    Adaptive=DemandAdaptive,
                    demand=demand,
                    interval="1s",
                    wait_count=max(1, int(after)),
                )
            return Client(cluster), cluster
        except BaseException:
            cluster.close()
            raise
