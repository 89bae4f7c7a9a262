"""``djdask clusters check PROFILE [MODULE]``: what a user runs first on a new cluster.

It submits one probe job on the profile and reports each step with its time:
the job submitted; started (its wait in the queue, its node), or why not (the
batch system's words, :mod:`djdask.clusters.jobwatch`); the node's Python,
djdask, Dask and DataJoint against this host's; the folders the job script names
(``log-directory``, ``shared-temp-directory``, a file store) the same on the node
as here; the database reachable from the node; MODULE imported there; the
object store writable from there; the scheduler reached from the node (over
TLS, as campaigns do); the walltime and memory the batch system granted.

Exit 0 when every step passes (a version mismatch, or less granted than asked,
is a warning); exit 2 at the first failure, explained.  ``--json`` prints the
steps for scripts.  Without MODULE it checks what needs no pipeline.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import secrets
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from djdask.clusters import DEFAULT_SHARED, Demand, Profile, controller_path, resolve
from djdask.db.connect import redact
from djdask.errors import InvalidInputError, ProfileError

if TYPE_CHECKING:
    import argparse

__all__ = ["check", "node_report", "versions"]

#: What the node and this host must agree on (distributed's own version check warns likewise).
PACKAGES = ("djdask", "dask", "distributed", "datajoint")


@dataclass
class Step:
    """One step of the check: ``result`` ok, warn, fail or skipped; ``seconds`` it took."""

    step: str
    result: str
    seconds: float
    detail: str


def versions() -> dict[str, str]:
    """Python's and the packages' versions in this process."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def node_report(module: str | None, markers: dict[str, str]) -> dict[str, Any]:
    """Run on the probe job's worker: its host, versions, which of ``markers`` (folder ->
    file name written there by the controller) it sees, the database, MODULE and the store.
    Each check is ``None`` (passed), a message, or ``"skipped: why"``."""
    report: dict[str, Any] = {"host": socket.gethostname(), "versions": versions(), "home": str(Path.home())}
    report["paths"] = {folder: (Path(folder) / name).exists() for folder, name in markers.items()}
    report["seconds"] = seconds = {}
    from djdask.db.connect import connect, is_configured  # lazy: on the node, after its Python was checked

    start = time.monotonic()
    if not is_configured():
        report["database"] = "skipped: no database configured (DJ_HOST); the embedded one serves this host only"
    else:
        try:
            connect(embedded=False)
            report["database"] = None
        except Exception as err:
            report["database"] = redact(str(err))
    seconds["database"], start = time.monotonic() - start, time.monotonic()
    report["imports"] = "skipped: no MODULE given" if not module else _imported(module)
    seconds["imports"], start = time.monotonic() - start, time.monotonic()
    report["store"] = _store()
    seconds["store"] = time.monotonic() - start
    return report


def _imported(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except BaseException as err:
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        return redact(f"{last} (sys.path: {', '.join(p for p in sys.path[:4] if p)})")
    return None


def _store() -> str | None:
    stores = os.environ.get("DJ_STORES")
    if not stores:
        return "skipped: no store configured (DJ_STORES)"
    from djdask.storage.stores import probe_store  # lazy: on the node only

    try:
        spec = json.loads(stores)
        name = spec["default"]
        probe_store(name, spec[name])
    except Exception as err:
        return redact(str(err))
    return None


class Failed(Exception):
    """A step failed: the paragraph that says why."""


def check(args: argparse.Namespace) -> int:
    """``djdask clusters check PROFILE [MODULE] [--json] [--timeout DURATION]``."""
    try:
        timeout = parse_timedelta(args.timeout or "10m")
    except (ValueError, TypeError):
        raise InvalidInputError(f"--timeout {args.timeout!r} is not a duration. Write it like 10m or 300s.") from None
    found = resolve(args.profile).validate()
    # One probe job, given up at its first failed start.
    profile = Profile(found.name, found.kind, {**found.raw, "max-jobs": 1, "max-failed-starts": 1})
    steps: list[Step] = []
    last = [time.monotonic()]

    def record(step: str, result: str, detail: str, seconds: float | None = None) -> None:
        now = time.monotonic()
        steps.append(Step(step, result, round(now - last[0] if seconds is None else seconds, 2), detail))
        last[0] = now
        if not args.json:
            print(f"  {result:7s} {step:10s} {steps[-1].seconds:7.1f} s  {detail}", flush=True)

    markers = _write_markers(profile)
    _configure_store()
    client = cluster = None
    demand = Demand()
    demand.workers = 1
    try:
        try:
            client, cluster = profile.start(1, demand)
        except ProfileError as err:
            record("submitted", "fail", str(err))
            raise Failed(str(err)) from None
        worker = _started(client, demand, record, timeout, profile.name)
        report = client.run(node_report, args.module, markers, workers=[worker])[worker]
        _node_steps(report, record, profile, client, demand, args.module)
    except Failed as failed:
        if args.json:
            print(json.dumps({"profile": profile.name, "ok": False, "steps": [asdict(s) for s in steps]}, indent=2))
        raise ProfileError(str(failed)) from None
    finally:
        if demand.watch is not None:
            demand.watch.stop()
        for closable in (client, cluster):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing what is gone already
                    pass
        _remove_markers(markers)
    if args.json:
        print(json.dumps({"profile": profile.name, "ok": True, "steps": [asdict(s) for s in steps]}, indent=2))
    else:
        warned = [s.step for s in steps if s.result == "warn"]
        print(
            f"Profile {profile.name!r} passed every check"
            + (f" (warnings: {', '.join(warned)})" if warned else "")
            + f": djdask populate {args.module or 'MODULE'} --cluster {profile.name}"
        )
    return 0


def _started(client: Any, demand: Demand, record, timeout: float, profile: str) -> str:
    """Wait for the probe job's worker; record submitted and started; its address."""
    submitted = said = 0
    deadline = time.monotonic() + timeout
    while True:
        for finding in demand.findings[said:]:
            print(f"           {finding}", file=sys.stderr, flush=True)
        said = len(demand.findings)
        if demand.submit_errors:
            error = demand.submit_errors[-1]
            record("submitted", "fail", error)
            raise Failed(
                f"Profile {profile!r} could not submit its probe job: {error}. Fix its settings (queue, account, "
                f"cores, memory, walltime) in `djdask.clusters.{profile}`; `djdask clusters script {profile}` "
                "prints the job script."
            )
        if not submitted and (demand.jobs or demand.submitted):
            job = next(iter(demand.jobs.values()), None)
            record("submitted", "ok", f"job {job.job_id}" if job else "submitted")
            submitted = 1
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if workers:
            address, info = next(iter(workers.items()))
            if not submitted:
                record("submitted", "ok", "a worker of the profile's scheduler")
            job = next(iter(demand.jobs.values()), None)
            waited = f"after {time.monotonic() - job.submitted:.1f} s in the queue and starting, " if job else ""
            record("started", "ok", f"{waited}on {info.get('host')} (worker {info.get('name')})")
            return address
        if demand.fatal is not None:
            record("started", "fail", demand.fatal.splitlines()[0])
            raise Failed(demand.fatal)
        if time.monotonic() > deadline:
            last = demand.findings[-1] if demand.findings else "the batch system gave no reason"
            record("started", "fail", f"no worker within {timeout:.0f} s")
            raise Failed(
                f"Profile {profile!r}: the probe job's worker did not join within {timeout:.0f} s ({last}). "
                "Raise --timeout for a busy cluster."
            )
        time.sleep(0.5)


def _node_steps(report: dict[str, Any], record, profile: Profile, client: Any, demand: Demand, module: str | None):
    """Record the steps the node answered; raise Failed at the first that failed."""
    name, host = profile.name, report["host"]
    here = versions()
    differ = [
        f"{k} {report['versions'].get(k)} there, {v} here" for k, v in here.items() if report["versions"].get(k) != v
    ]
    if differ:
        record("versions", "warn", "; ".join(differ) + " (mixed versions may fail in odd ways: install the same)")
    else:
        record("versions", "ok", ", ".join(f"{k} {v}" for k, v in here.items()))
    unseen = [folder for folder, seen in report["paths"].items() if not seen]
    if unseen:
        record("paths", "fail", f"{host} does not see {', '.join(unseen)}")
        raise Failed(
            f"Profile {name!r}: the node {host} does not see {', '.join(unseen)} as this host does (a file written "
            f"here is not there; the node's HOME is {report['home']}). Name folders on a file system the login "
            f"and compute nodes share: `djdask.clusters.{name}.log-directory`, `shared-temp-directory`, and the "
            "store's location (DJ_STORES)."
        )
    record("paths", "ok" if report["paths"] else "skipped", ", ".join(report["paths"]) or "no folder to share")
    for step, fix in (
        ("database", "the database must accept connections from the compute nodes (DJ_HOST, a firewall)"),
        ("imports", "the pipeline must be installed (or on PYTHONPATH) where the nodes see it"),
        ("store", "the object store must be writable from the compute nodes"),
    ):
        outcome = report[step]
        took = report["seconds"][step]
        if outcome is None:
            done = {"database": "connected", "imports": f"import {module}", "store": "wrote a probe object"}[step]
            record(step, "ok", done, took)
        elif str(outcome).startswith("skipped"):
            record(step, "skipped", str(outcome)[len("skipped: ") :], took)
        else:
            record(step, "fail", str(outcome).splitlines()[0], took)
            raise Failed(f"Profile {name!r}: on the node {host}, {step}: {outcome} ({fix}).")
    address = client.scheduler.address
    tls = " over TLS" if address.startswith("tls://") else ""
    record("scheduler", "ok", f"{host} reached {address}{tls}", 0.0)
    job = next(iter(demand.jobs.values()), None)
    status = profile.kind.job_status(job.job_id) if job is not None and hasattr(profile.kind, "job_status") else None
    granted = getattr(status, "granted", None) or {}
    if not granted:
        record("granted", "skipped", "the batch system said nothing of it")
        return
    asked = {key: profile.raw[key] for key in granted if profile.raw.get(key)}
    record(
        "granted",
        "ok",
        ", ".join(f"{k} {v}" + (f" (asked {asked[k]})" if k in asked else "") for k, v in granted.items()),
    )


def _write_markers(profile: Profile) -> dict[str, str]:
    """A file in each folder the job script names, for the node to look for: folder -> name."""
    folders = [profile.raw.get("log-directory")]
    if hasattr(profile.kind, "submit_command"):
        folders.append(profile.raw.get("shared-temp-directory") or DEFAULT_SHARED)
    markers = {}
    for folder in folders:
        if not folder:
            continue
        path = Path(controller_path(str(folder)))
        try:
            path.mkdir(parents=True, exist_ok=True)
            name = f".djdask-check-{secrets.token_hex(6)}"
            (path / name).write_text("djdask clusters check\n")
            markers[str(path)] = name
        except OSError as err:
            raise ProfileError(f"Profile {profile.name!r}: cannot write to {path} ({err}).") from None
    return markers


def _remove_markers(markers: dict[str, str]) -> None:
    for folder, name in markers.items():
        try:
            (Path(folder) / name).unlink()
        except OSError:
            pass


def _configure_store() -> None:
    """Export the campaign's default store (DJ_STORES) for the probe job, as a campaign does."""
    from djdask.storage.stores import configure_store  # lazy: DataJoint (1 s), after the arguments were checked

    configure_store(None, probe=True)
