"""``djdask submit``: a campaign whose controller outlives the login session.

The campaign's record is made at once (state ``submitted``), then its
controller, ``djdask populate ... --campaign-id ID``, starts as a batch job of
the profile (SLURM, PBS, SGE, LSF) or, on ``local``, as a detached process;
``submit`` returns with the id, the log and how to watch it.  The job script
and the log live in ``djdask.campaign.submit-dir`` (default
``~/.djdask/campaigns``, which a cluster's nodes share with its login node).

A controller stops claiming ``djdask.campaign.controller-margin`` before its
walltime (at most a quarter of it), lets running keys finish within the grace
period and releases the rest.  With ``--resubmit`` it then submits the same
job script again: its successor takes the record over (``controllers`` counts
them) and the accounting adds up, so a campaign longer than any walltime
finishes by itself.  Credentials are never written to the script: the batch
system hands the submitting shell's environment to the job.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from dask.utils import parse_timedelta

from djdask.campaign.checks import make_kwargs_arg, pools_arg
from djdask.clusters import controller_path, resolve
from djdask.clusters.profiles import batch_kind
from djdask.config import namespace as config
from djdask.errors import DjdaskError, InvalidInputError, ProfileError
from djdask.jobs.queue import Owner
from djdask.planning.planner import select
from djdask.records.records import Records, description, home_schema, new_id

__all__ = [
    "cancel_command",
    "controller_stop_after",
    "hand_over",
    "job_id_in",
    "job_script",
    "resubmit",
    "stop_after",
    "submit",
    "submit_dir",
]


def cancel_command(kind: str) -> str | None:
    """The command that cancels a controller job of batch kind ``kind`` (None: not a batch kind)."""
    found = batch_kind(kind)
    return found.cancel_command if found is not None else None


def submit_dir() -> Path:
    """Where job scripts and logs of submitted campaigns go (created, private to the user)."""
    configured = config.get("campaign.submit-dir")
    # The job script names this folder (its log, the batch system's output): absolute, as read here.
    folder = Path(controller_path(configured)) if configured else Path.home() / ".djdask" / "campaigns"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def controller_stop_after(walltime_s: float) -> float:
    """Seconds a controller with this walltime claims keys: its walltime less
    ``djdask.campaign.controller-margin`` (at most a quarter of it)."""
    margin = float(parse_timedelta(config.get("campaign.controller-margin")))
    return max(1.0, walltime_s - min(margin, walltime_s / 4))


def controller_command(args: argparse.Namespace, campaign: str, stop_after: float | None) -> list[str]:
    """The ``djdask populate`` command line of a submitted campaign's controller."""
    command = [sys.executable, "-m", "djdask.cli", "populate", args.module]
    for target in args.target:
        command += ["--target", target]
    for restriction in args.restrict:
        command += ["-r", restriction]
    for option in ("workers", "max_calls", "priority", "store", "make_kwargs"):
        value = getattr(args, option, None)
        if value is not None:
            value = json.dumps(value) if isinstance(value, dict) else value
            command += ["--" + option.replace("_", "-"), str(value)]
    if args.target_duration is not None:
        command += ["--target-duration", f"{args.target_duration}s"]
    for cluster in args.cluster or []:
        command += ["--cluster", cluster]
    command += ["--campaign-id", campaign]
    if stop_after is not None:
        command += ["--stop-after", f"{max(1.0, stop_after):.0f}s"]
    if args.resubmit:
        command += ["--resubmit"]
    if getattr(args, "follow", False):
        command += ["--follow"]
    return command


def batch_output(script: Path) -> Path:
    """Where the batch system writes a controller job's own output (a job killed at its
    walltime says so there); the controller itself appends to ``<id>.log``."""
    return script.with_suffix(".batch.out")


def job_script(profile: Any, args: argparse.Namespace, campaign: str, log: Path, walltime: str) -> str:
    """The controller's job script.  Its body appends its output to ``log`` itself: a
    batch system's ``-o`` file is rewritten by each job on some systems (PBS copies it
    back when the job ends), and successive controllers share the log."""
    kind = profile.kind
    raw = profile.raw
    stop_after = controller_stop_after(kind.walltime_seconds(walltime))
    if args.stop_after:
        stop_after = min(stop_after, args.stop_after)
    lines = ["#!/usr/bin/env bash"]
    out = batch_output(Path(log))
    directives = [kind.name_directive.format(f"djdask-{campaign}"), *(d.format(out) for d in kind.log_directives)]
    directives.append(kind.walltime_directive.format(walltime))
    directives.append(kind.memory_directive.format(args.memory))
    if kind.cores_directive:
        directives.append(kind.cores_directive)
    directives += kind.export_directives
    if raw.get("queue"):
        directives.append(kind.queue_directive.format(raw["queue"]))
    if raw.get(kind.account_key):
        directives.append(kind.account_directive.format(raw[kind.account_key]))
    if kind.chdir_directive:
        directives.append(kind.chdir_directive.format(os.getcwd()))
    lines += [f"{kind.directive_prefix} {d}" for d in directives]
    command = " ".join(shlex.quote(part) for part in controller_command(args, campaign, stop_after))
    lines += [
        f"exec >>{shlex.quote(str(log))} 2>&1",
        f"cd {shlex.quote(os.getcwd())}",
        f'echo "== djdask controller of campaign {campaign}: $(date -u +%FT%TZ) on $(hostname)"',
        f"exec {command}",
    ]
    return "\n".join(lines) + "\n"


def job_id_in(output: str) -> str:
    """The job id in a submit command's output (``123``, ``123;cluster``, ``Job <123> ...``)."""
    match = re.search(r"(\d+(?:\.[\w.-]+)?)", output)
    if not match:
        raise ProfileError(f"The batch system took the controller job but printed no job id: {output.strip()!r}")
    return match.group(1)


def _submit_script(kind: Any, script: Path) -> str:
    command = [kind.submit_command, *kind.submit_options]
    if kind.log_on_command_line:
        command += [part for d in kind.log_directives for part in d.format(batch_output(script)).split(" ", 1)]
    if kind.script_on_stdin:
        done = subprocess.run(command, stdin=script.open(), capture_output=True, text=True)
    else:
        command.append(str(script))
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ProfileError(
            f"`{' '.join(command)}` refused the controller job: {(done.stderr or done.stdout).strip()[:500]}"
        )
    return job_id_in(done.stdout)


def submit(args: argparse.Namespace) -> int:
    """``djdask submit MODULE ... --cluster PROFILE``: record the campaign, start its controller
    as a batch job (or a detached process on ``local``), print how to follow it, return."""
    args.make_kwargs = make_kwargs_arg(args.make_kwargs)
    pools = pools_arg(args.cluster) or {"default": "local"}
    profiles = {name: resolve(profile) for name, profile in pools.items()}
    for profile in profiles.values():
        profile.validate()
    controller = profiles["default"]
    kind = controller.kind.name
    if kind == "local" and args.resubmit:
        raise InvalidInputError(
            "--resubmit hands a campaign over before its controller's walltime; a controller on `local` has "
            "none. Leave --resubmit out, or submit with a batch profile (--cluster PROFILE)."
        )
    if kind != "local" and batch_kind(kind) is None:
        raise InvalidInputError(
            f"`djdask submit` starts controllers on SLURM, PBS, SGE, LSF or local; profile "
            f"{controller.name!r} is {kind}. Run `djdask populate` there, or submit with another profile."
        )
    selection = select(args.module, args.target, args.restrict)  # a bad module or restriction stops here
    connection = selection.connection
    records = Records(connection, home_schema(selection.tables))
    records.ensure()
    campaign = new_id()
    folder = submit_dir()
    log, script = folder / f"{campaign}.log", folder / f"{campaign}.sh"
    owner = Owner.of(connection)
    records.insert(
        {
            "campaign": campaign,
            **description(selection, owner.user, {**pools, "controller": controller.name if kind == "local" else kind}),
            "host": platform.node(),
            "pid": 0,
            "state": "submitted",
            "log": str(log),
        }
    )
    try:
        if kind == "local":
            job = _start_detached(args, campaign, log, args.stop_after)
        else:
            walltime = args.walltime or controller.kind.settings(controller.name, controller.raw).get("walltime")
            if not walltime or not controller.kind.walltime_pattern.match(str(walltime)):
                raise InvalidInputError(
                    f"The controller job needs a walltime {controller.kind.name} reads"
                    + (f" ({walltime!r} is not one)" if walltime else f" (profile {controller.name!r} has none)")
                    + f": give --walltime {controller.kind.walltime_example}."
                )
            script.write_text(job_script(controller, args, campaign, log, walltime))
            script.chmod(0o700)
            job = _submit_script(controller.kind, script)
    except BaseException:
        records.update(campaign, ("submitted",), state="failed", ended="now", exit_code=2)
        raise
    records.update(campaign, job_id=job)
    print(f"Campaign {campaign} submitted: controller {'job ' + job if kind != 'local' else job}.")
    print(f"Log:      {log}")
    print(f"Watch:    djdask campaigns {args.module}   (or: tail -f {log})")
    print(f"Cancel:   djdask cancel {campaign}")
    print(f"Report:   djdask report {campaign}")
    return 0


def _start_detached(args: argparse.Namespace, campaign: str, log: Path, stop_after: float | None) -> str:
    """The controller as a process of its own session: it outlives this shell."""
    command = controller_command(args, campaign, stop_after)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.getcwd(),
        )
    return f"pid {process.pid}"


def resubmit(record: dict[str, Any]) -> str:
    """Submit a controller's job script once more (its successor); return the new job id."""
    name = (record.get("clusters") or {}).get("controller") or ""
    kind = batch_kind(name)
    script = Path(record["log"]).with_suffix(".sh")
    if kind is None or not script.exists():
        raise ProfileError(
            f"Campaign {record['campaign']} cannot resubmit its controller: no job script {script} for a "
            f"batch system (controller: {name}). Submit it again with `djdask submit`."
        )
    if shutil.which(kind.submit_command) is None:
        raise ProfileError(f"`{kind.submit_command}` is not on this node's PATH: the successor is not submitted.")
    return _submit_script(kind, script)


def stop_after(campaign: Any, seconds: float, *, resubmit: bool) -> None:
    """Stop ``campaign`` claiming after ``seconds`` (its controller's walltime is near): to hand
    over to a successor with ``resubmit``, else to end as cancelled."""

    def time_is_up() -> None:
        print(
            f"djdask: {seconds:.0f} s are up: no new keys; running ones may finish"
            + ("; then the successor takes over." if resubmit else "."),
            file=sys.stderr,
            flush=True,
        )
        campaign.hand_over() if resubmit else campaign.request_stop()

    timer = threading.Timer(seconds, time_is_up)
    timer.daemon = True
    timer.start()


def hand_over(campaign: Any, summary: Any) -> int:
    """After a controller stopped for its successor: submit it, note its job on the record."""
    records, campaign_id = campaign.record.records, campaign.record.campaign
    made = sum(t.succeeded for t in summary.tables)
    try:
        job = resubmit(records.get(campaign_id) or {"campaign": campaign_id})
    except DjdaskError:
        records.update(campaign_id, ("submitted",), state="failed", ended="now", exit_code=2)
        raise
    records.update(campaign_id, job_id=job)
    print(f"\nCampaign {campaign_id}: {made} key(s) made by this controller; handed over to job {job}.")
    return 0
