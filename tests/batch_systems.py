"""Batch systems for the tests, started from nothing on this one machine.

Each starter returns an object whose ``env`` points the batch system's commands
at the instance it started (own ports, state and spool in the test's folder),
``queue()`` lists its jobs (id, name, state) and ``stop()`` cancels what is
left and stops its daemons.  They need root, as the daemons do.

- :func:`start_slurm`: slurmctld + slurmd (Debian's ``slurmctld slurmd
  slurm-client munge``).
- :func:`start_gridengine`: sge_qmaster + sge_execd in a cell of its own
  (Debian's ``gridengine-master gridengine-exec gridengine-client``).
- :func:`pbs_on_slurm`: PBS's ``qsub``/``qstat``/``qdel`` on top of a started
  SLURM: SchedMD's Torque wrappers (Debian's ``slurm-wlm-torque``), which
  ``tests/install-services`` unpacks into a folder of their own instead of
  installing them, because that package and ``gridengine-client`` both ship
  ``/usr/bin/qsub`` (dpkg refuses to have both).  Only a test's own PATH
  puts that folder first.

The same on several compute nodes (network namespaces on a bridge, ``tests/nodes.py``):
``tests/batch_nodes.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.nodes import NodeNetwork
from tests.services import ServiceUnavailable, _free_port

__all__ = ["GridEngine", "PBS_ON_SLURM", "Slurm", "pbs_on_slurm", "start_gridengine", "start_slurm"]

#: Where ``tests/install-services`` unpacks slurm-wlm-torque (``DJDASK_PBS_ON_SLURM`` overrides).
PBS_ON_SLURM = Path(os.environ.get("DJDASK_PBS_ON_SLURM", "/opt/djdask-tests/pbs-on-slurm"))


def _command(env: dict[str, str], args: tuple[str, ...], check: bool) -> str:
    """Run a batch system's command with ``env``; its output, or RuntimeError with its message."""
    out = subprocess.run(list(args), env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def cancel_slurm_jobs(full_env: dict[str, str], timeout: float = 20) -> None:
    """Cancel every job of the SLURM that ``full_env`` points at; wait up to ``timeout`` s for its queue to empty."""
    subprocess.run(["scancel", "--full", "-u", os.environ.get("USER") or "root"], env=full_env, capture_output=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h"], env=full_env, capture_output=True, text=True)
        if out.returncode or not out.stdout.strip():
            return
        time.sleep(0.5)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ServiceUnavailable(f"{what}'s daemons need root")


@dataclass
class Slurm:
    """A single-node SLURM started by :func:`start_slurm`: ``env`` points its
    commands (sbatch, squeue, scancel) at it."""

    base: Path
    env: dict[str, str]
    stop: Callable[[], None] = field(repr=False)
    kind = "slurm"

    def run(self, *args: str, check: bool = True) -> str:
        return _command(self.env, args, check)

    def queue(self) -> list[dict[str, str]]:
        """Jobs in the queue: id, name, state."""
        rows = self.run("squeue", "-h", "-o", "%i|%j|%T").split()
        return [dict(zip(("id", "name", "state"), r.split("|"))) for r in rows]

    def cancel_all(self) -> None:
        self.run("scancel", "--full", "-u", os.environ.get("USER") or "root", check=False)


_SLURM_CONF = """\
ClusterName=djdask-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
MinJobAge=2
KillWait=5
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _munge_running() -> bool:
    munge, unmunge = shutil.which("munge"), shutil.which("unmunge")
    if not (munge and unmunge):
        return False
    cred = subprocess.run([munge, "-n"], capture_output=True)
    return cred.returncode == 0 and subprocess.run([unmunge], input=cred.stdout, capture_output=True).returncode == 0


def _start_munge(munged: str) -> None:
    """munged, with a key, unless one runs already (SLURM's daemons and commands authenticate through it)."""
    if _munge_running():
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(secrets.token_bytes(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "/run/munge"], check=True)
    subprocess.run(["runuser", "-u", "munge", "--", munged], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not _munge_running():
        if time.monotonic() > deadline:
            raise ServiceUnavailable("munged did not start")
        time.sleep(0.1)


def _slurm_binaries() -> dict[str, str]:
    """SLURM's and munge's programs, or ServiceUnavailable saying what to install."""
    binaries = {
        name: shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        for name in ("slurmctld", "slurmd", "munged", "sinfo", "sbatch")
    }
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        raise ServiceUnavailable(
            f"SLURM is not installed ({', '.join(missing)} missing): "
            "apt-get install slurmctld slurmd slurm-client munge"
        )
    return binaries


def start_slurm(base: Path, cpus: int = 8, memory_mb: int = 16000) -> Slurm:
    """A single-node SLURM (slurmctld + slurmd on 127.0.0.1, own ports and state in
    ``base``), with munge started if it is not running.  Needs root, as SLURM's
    daemons do, and Debian's ``slurmctld slurmd slurm-client munge``."""
    binaries = _slurm_binaries()
    _need_root("SLURM")
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (base / sub).mkdir(exist_ok=True)
    _start_munge(binaries["munged"])
    conf = base / "slurm.conf"
    conf.write_text(
        _SLURM_CONF.format(base=base, ctld_port=_free_port(), d_port=_free_port(), cpus=cpus, memory=memory_mb)
    )
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    subprocess.run([binaries["slurmctld"], "-c", "-f", str(conf)], env=full_env, check=True, capture_output=True)
    subprocess.run(
        [binaries["slurmd"], "-N", "localhost", "-f", str(conf)], env=full_env, check=True, capture_output=True
    )

    def stop() -> None:
        cancel_slurm_jobs(full_env)
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            try:
                os.kill(int((base / pidfile).read_text()), 15)
            except (OSError, ValueError):
                pass
        subprocess.run(["pkill", "-f", f"slurmstepd.*{base}"], capture_output=True)

    slurm = Slurm(base, env, stop)
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run([binaries["sinfo"], "-h", "-o", "%t"], env=full_env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
            return slurm
        if time.monotonic() > deadline:
            stop()
            raise ServiceUnavailable(
                f"SLURM did not come up (sinfo: {out.stdout.strip() or out.stderr.strip()}); "
                f"see {base}/slurmctld.log and slurmd.log"
            )
        time.sleep(0.2)


@dataclass
class GridEngine:
    """A single-node Grid Engine started by :func:`start_gridengine`: ``env`` names its
    cell and ports for qsub, qstat, qdel and qconf; its one queue is ``all.q``."""

    base: Path
    env: dict[str, str]
    stop: Callable[[], None] = field(repr=False)
    #: Its compute nodes, when started by :func:`start_gridengine_nodes`.
    network: NodeNetwork | None = field(default=None, repr=False)
    setup_seconds: float = 0.0
    kind = "sge"

    def run(self, *args: str, check: bool = True) -> str:
        return _command(self.env, args, check)

    def queue(self) -> list[dict[str, str]]:
        """Jobs in the queue, every user's: id, name, state (SGE's letters: qw, r, dr...)."""
        root = ET.fromstring(self.run("qstat", "-u", "*", "-xml"))
        return [
            {"id": job.findtext("JB_job_number"), "name": job.findtext("JB_name"), "state": job.findtext("state")}
            for job in root.iter("job_list")
        ]

    def running(self, name: str) -> list[str]:
        return [j["id"] for j in self.queue() if j["name"] == name and "r" in j["state"]]

    def cancel_all(self) -> None:
        self.run("qdel", "-u", "*", check=False)


#: Settings on top of Debian's defaults: root may run jobs (min_uid 0), no mail.
_SGE_CONF_EDITS = {"min_uid": "0", "min_gid": "0", "mailer": "/bin/true", "load_report_time": "00:00:05"}
_SGE_QUEUE_EDITS = {
    "qname": "all.q",
    "hostlist": "@allhosts",
    "slots": "{slots}",
    "shell": "/bin/bash",
    "pe_list": "NONE",
    "load_thresholds": "NONE",
}


def _edit_conf(text: str, edits: dict[str, str]) -> str:
    lines = []
    for line in text.splitlines():
        key = line.split(None, 1)[0] if line.strip() else ""
        lines.append(f"{key} {edits[key]}" if key in edits else line)
    return "\n".join(lines) + "\n"


def start_gridengine(base: Path, slots: int = 8, network: NodeNetwork | None = None) -> GridEngine:
    """A single-node Grid Engine (8.1.9, as Debian ships it): qmaster and execd on free
    ports, a cell of its own under ``$SGE_ROOT`` whose spool lives in ``base``, one queue
    ``all.q`` with ``slots`` slots, a scheduler that runs every second.  Root's jobs run
    as root.  Up in about 3 s.

    With ``network`` (see :func:`start_gridengine_nodes`), the execution hosts are its
    nodes, an execd on each; qmaster and the commands on this host see the nodes' names
    through the nodes' /etc/hosts (Grid Engine resolves every host it talks to), and
    ``stop()`` removes the network too."""
    sge_root = Path("/var/lib/gridengine")
    binaries = {
        name: shutil.which(name)
        or next((p for p in (f"/usr/sbin/{name}", f"/usr/lib/gridengine/{name}") if os.path.exists(p)), None)
        for name in ("sge_qmaster", "sge_execd", "qconf", "qsub", "spoolinit", "spooldefaults")
    }
    missing = [name for name, path in binaries.items() if path is None]
    if missing or not (sge_root / "util" / "arch").exists():
        raise ServiceUnavailable(
            f"Grid Engine is not installed ({', '.join(missing) or sge_root}): "
            "apt-get install gridengine-master gridengine-exec gridengine-client"
        )
    _need_root("Grid Engine")
    base.mkdir(parents=True, exist_ok=True)
    cell = f"djdask-{secrets.token_hex(4)}"
    common = sge_root / cell / "common"
    common.mkdir(parents=True)
    for sub in ("spooldb", "qmaster/job_scripts", "execd"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = {
        "SGE_ROOT": str(sge_root),
        "SGE_CELL": cell,
        "SGE_QMASTER_PORT": str(_free_port()),
        "SGE_EXECD_PORT": str(_free_port()),
    }
    hosts = [node.name for node in network.nodes] if network else ["localhost"]
    with_hosts: list[str] = []  # what runs qmaster and the commands: with the nodes' /etc/hosts, if any
    if network:
        with_hosts = [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f'mount --bind {network.nodes[0].hosts} /etc/hosts && exec "$0" "$@"',
        ]
        wrappers = base / "bin"
        wrappers.mkdir(exist_ok=True)
        for command in ("qsub", "qstat", "qdel", "qconf", "qacct", "qhost", "qalter", "qhold", "qrls", "qmod"):
            if shutil.which(command):
                (wrappers / command).write_text(
                    f"#!/bin/sh\nexec {' '.join(with_hosts[:4])} '{with_hosts[4]}' {shutil.which(command)} \"$@\"\n"
                )
                (wrappers / command).chmod(0o755)
        env["PATH"] = f"{wrappers}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    full_env = {**os.environ, **env}
    (common / "bootstrap").write_text(
        "admin_user none\ndefault_domain none\nignore_fqdn true\nspooling_method berkeleydb\n"
        f"spooling_lib libspoolb\nspooling_params {base}/spooldb\nbinary_path /usr/sbin\n"
        f"qmaster_spool_dir {base}/qmaster\nsecurity_mode none\nlistener_threads 2\nworker_threads 2\n"
        "scheduler_threads 1\n"
    )
    qmaster_host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    (common / "act_qmaster").write_text(qmaster_host + "\n")
    # One host: 127.0.0.1 resolves to localhost, which is this host.  With nodes, this host's
    # name resolves to its bridge address (the nodes' /etc/hosts), which the nodes reach; an
    # alias to localhost would send them to their own 127.0.0.1.
    (common / "host_aliases").write_text("" if network else f"localhost {qmaster_host}\n")
    defaults = Path("/usr/share/gridengine/default-configuration").read_text()
    (base / "configuration").write_text(
        _edit_conf(defaults, {**_SGE_CONF_EDITS, "execd_spool_dir": str(base / "execd")})
    )

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env={**full_env, **extra}, capture_output=True, text=True, timeout=60)

    def stop() -> None:
        run("qdel", "-u", "*")
        deadline = time.monotonic() + 10
        while "<job_list" in run("qstat", "-u", "*", "-xml").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        for host in hosts:
            run("qconf", "-ke", host)
        pids = {}
        for name, pidfile in (
            *((f"execd {host}", base / "execd" / host / "execd.pid") for host in hosts),
            ("qmaster", base / "qmaster" / "qmaster.pid"),
        ):
            try:
                pids[name] = int(pidfile.read_text())
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        while any(_alive(pid) for name, pid in pids.items() if name != "qmaster") and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids.values():  # qmaster takes 9 s to stop cleanly; its spool is thrown away
            if _alive(pid):
                os.kill(pid, 9)
        if network:
            network.remove()  # and what a job left running on a node
        else:
            subprocess.run(["pkill", "-9", "-f", f"sge_shepherd.*{base}"], capture_output=True)
        shutil.rmtree(sge_root / cell, ignore_errors=True)

    try:
        spool = "/usr/lib/gridengine"
        for step in (
            [f"{spool}/spoolinit", "berkeleydb", "libspoolb", f"{base}/spooldb", "init"],
            [f"{spool}/spooldefaults", "configuration", str(base / "configuration")],
            [f"{spool}/spooldefaults", "complexes", "/usr/share/gridengine/util/resources/centry"],
            [f"{spool}/spooldefaults", "usersets", "/usr/share/gridengine/util/resources/usersets"],
            [f"{spool}/spooldefaults", "managers", "root"],
            [*with_hosts, binaries["sge_qmaster"]],
        ):
            done = run(*step)
            if done.returncode:
                raise ServiceUnavailable(
                    f"Grid Engine: {' '.join(step)} failed: {(done.stderr or done.stdout).strip()}"
                )
        deadline = time.monotonic() + 30
        while run("qconf", "-sh").returncode:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"sge_qmaster did not answer; see {base}/qmaster/messages")
            time.sleep(0.2)
        schedule = _edit_conf(
            run("qconf", "-ssconf").stdout,
            {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"},
        )
        (base / "sconf").write_text(schedule)
        for host in hosts:
            (base / f"exechost-{host}").write_text(
                f"hostname {host}\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\n"
                "projects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n"
            )
        (base / "hostgroup").write_text(f"group_name @allhosts\nhostlist {' '.join(hosts)}\n")
        template = run("qconf", "-aq", EDITOR="cat").stdout
        (base / "queue").write_text(
            _edit_conf(template, {k: v.format(slots=slots) for k, v in _SGE_QUEUE_EDITS.items()})
        )
        execds = (
            [node.command(binaries["sge_execd"]) for node in network.nodes] if network else [[binaries["sge_execd"]]]
        )
        for step in (
            ["qconf", "-Msconf", str(base / "sconf")],
            *(["qconf", "-Ae", str(base / f"exechost-{host}")] for host in hosts),
            ["qconf", "-as", qmaster_host if network else "localhost"],  # jobs are submitted from this host
            ["qconf", "-Ahgrp", str(base / "hostgroup")],
            ["qconf", "-Aq", str(base / "queue")],
            *execds,
        ):
            done = run(*step)
            if done.returncode:
                raise ServiceUnavailable(
                    f"Grid Engine: {' '.join(step)} failed: {(done.stderr or done.stdout).strip()}"
                )
        grid = GridEngine(base, env, stop)
        deadline = time.monotonic() + 60
        while True:
            out = run("qstat", "-f", "-q", "all.q")
            up = out.returncode == 0 and "-NA-" not in out.stdout
            for host in hosts if up else ():
                if f"all.q@{host}" not in out.stdout:
                    up = False
                    break
                states = out.stdout.split(f"all.q@{host}", 1)[1].splitlines()[0].split()
                up = up and len(states) <= 4  # no state letters: not (u)nknown, (a)larm, (d)isabled
            if up:
                return grid
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"Grid Engine's execd never reported (qstat -f: {out.stdout.strip() or out.stderr.strip()}); "
                    f"see {base}/qmaster/messages and {base}/execd/<host>/messages"
                )
            time.sleep(0.3)
    except BaseException:
        stop()
        raise


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that nobody reaps, as daemons become here, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class PbsOnSlurm:
    """PBS's commands (Torque syntax) driving a started :class:`Slurm`: ``env`` puts the
    wrappers first on PATH and points them at that SLURM."""

    slurm: Slurm
    env: dict[str, str]
    kind = "pbs"

    def run(self, *args: str, check: bool = True) -> str:
        """Any command, PBS's or SLURM's: ``env`` holds both (SLURM_CONF, the wrappers first on PATH)."""
        return _command(self.env, args, check)

    def queue(self) -> list[dict[str, str]]:
        """Jobs as PBS's ``qstat -f`` shows them: id, name, state (Q, R, C...)."""
        done = subprocess.run(
            ["qstat", "-f"], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60
        )
        if done.returncode and (done.stdout.strip() or done.stderr.strip()):
            raise RuntimeError(f"qstat -f failed: {(done.stderr or done.stdout).strip()}")
        # The wrappers' qstat exits 1, saying nothing, when no job is listed.
        jobs, job = [], None
        for line in done.stdout.splitlines():
            if line.startswith("Job Id:"):
                job = {"id": line.split(":", 1)[1].strip().split(".")[0], "name": "", "state": ""}
                jobs.append(job)
            elif job is not None and "=" in line:
                key, _, value = line.strip().partition(" = ")
                if key == "Job_Name":
                    job["name"] = value.strip()
                elif key == "job_state":
                    job["state"] = value.strip()
        return [j for j in jobs if j["state"] not in ("C", "F")]


def pbs_on_slurm(slurm: Slurm) -> PbsOnSlurm:
    """PBS's qsub/qstat/qdel (slurm-wlm-torque, unpacked by tests/install-services) on ``slurm``."""
    bin_dir = PBS_ON_SLURM / "usr" / "bin"
    if not (bin_dir / "qsub").exists():
        raise ServiceUnavailable(
            f"PBS's commands on SLURM are not unpacked in {PBS_ON_SLURM}: run tests/install-services "
            "(it unpacks Debian's slurm-wlm-torque there, beside Grid Engine's qsub)"
        )
    check = subprocess.run(
        ["perl", "-MSlurm", "-e", "1"], env={**os.environ, **slurm.env}, capture_output=True, text=True
    )
    if check.returncode:
        raise ServiceUnavailable(f"slurm-wlm-torque needs libslurm-perl: {check.stderr.strip()[:200]}")
    return PbsOnSlurm(slurm, {**slurm.env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
