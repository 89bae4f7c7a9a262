"""Batch systems on several compute nodes, started from nothing on this one machine.

The nodes are Linux network namespaces on a bridge to this host, the login node
(:mod:`tests.nodes`): each has its own address, hostname, /etc/hosts and HOME.
The daemons a cluster's login node runs run here; each node runs its own.  The
objects returned are those of :mod:`tests.batch_systems` (``env``, ``queue()``,
``stop()``) with the nodes besides, and their ``stop()`` removes the network too.

- :func:`start_slurm_nodes`: slurmctld here, a slurmd on each node.  PBS's commands
  run on it as on the one-node SLURM (:func:`tests.batch_systems.pbs_on_slurm`).
- :func:`start_gridengine_nodes`: sge_qmaster here, an sge_execd on each node.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.batch_systems import (
    _SLURM_CONF,
    GridEngine,
    Slurm,
    _need_root,
    _slurm_binaries,
    _start_munge,
    cancel_slurm_jobs,
    start_gridengine,
)
from tests.nodes import Node, NodeNetwork, create_nodes
from tests.services import ServiceUnavailable, _free_port

__all__ = ["SlurmNodes", "start_gridengine_nodes", "start_slurm_nodes"]


@dataclass
class SlurmNodes(Slurm):
    """A SLURM of several compute nodes started by :func:`start_slurm_nodes`: slurmctld on
    this host (the login node, reached at ``login_address``), one slurmd in each node's
    network namespace.  ``queue()`` also says each job's node."""

    network: NodeNetwork | None = field(default=None, repr=False)
    #: Seconds from nothing to every node idle (the network, the daemons, the registrations).
    setup_seconds: float = 0.0

    @property
    def nodes(self) -> list[Node]:
        return self.network.nodes

    @property
    def login_address(self) -> str:
        return self.network.login_address

    def queue(self) -> list[dict[str, str]]:
        """Jobs in the queue: id, name, state, node (empty while pending)."""
        rows = self.run("squeue", "-h", "-o", "%i|%j|%T|%N").splitlines()
        return [dict(zip(("id", "name", "state", "node"), r.split("|"))) for r in rows if r.strip()]


def _conf_with(text: str, **lines: str) -> str:
    """``text`` (slurm.conf) with the line of each ``Key=`` given replaced by ``lines[Key]``."""
    return "".join(
        lines[line.split("=", 1)[0]] + "\n" if line.split("=", 1)[0] in lines else line + "\n"
        for line in text.splitlines()
    )


#: The job's HOME is its node's: SLURM copies the submitter's environment into the job,
#: HOME included, and a TaskProlog's "export" lines are applied to the job's task.
_TASK_PROLOG = """#!/bin/sh
echo "export HOME={homes}/$(hostname)"
"""


def start_slurm_nodes(base: Path, nodes: int = 2, cpus: int = 4, memory_mb: int = 8000) -> SlurmNodes:
    """A SLURM of ``nodes`` compute nodes ``node1``, ``node2``... (see :mod:`tests.nodes`):
    slurmctld on this host listens for them on the bridge's address, each node's slurmd runs
    in the node's network namespace under its hostname (``NodeName=nodeN NodeAddr=<its
    address>``), and every job's HOME is its node's own folder, ``base/home/<node>``.  Jobs
    are spread over the nodes (``CR_LLN``: the least loaded node first).  Needs root, SLURM
    and munge as :func:`start_slurm` does, and iproute2; :meth:`SlurmNodes.stop` cancels the
    jobs, stops the daemons and removes the namespaces and the bridge."""
    binaries = _slurm_binaries()
    _need_root("SLURM")
    started = time.monotonic()
    base.mkdir(parents=True, exist_ok=True)
    _start_munge(binaries["munged"])
    network = create_nodes(base, nodes)
    daemons: list[subprocess.Popen] = []
    conf = base / "slurm.conf"
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if daemons and daemons[0].poll() is None:
            cancel_slurm_jobs(full_env)
        for daemon in reversed(daemons):
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        network.remove()  # and with it whatever a job left running on a node
        atexit.unregister(stop)

    atexit.register(stop)  # a test session that ends abnormally still takes its nodes down
    try:
        (base / "state").mkdir(exist_ok=True)
        for node in network.nodes:
            (base / f"spool-{node.name}").mkdir(exist_ok=True)
        prolog = base / "task-prolog"
        prolog.write_text(_TASK_PROLOG.format(homes=base / "home"))
        prolog.chmod(0o755)
        names = f"node[1-{nodes}]" if nodes > 1 else "node1"
        conf.write_text(
            _conf_with(
                _SLURM_CONF.format(base=base, ctld_port=_free_port(), d_port=_free_port(), cpus=cpus, memory=memory_mb),
                # "localhost" is the name slurmctld accepts as its own; the nodes reach it at the address.
                SlurmctldHost=f"SlurmctldHost=localhost({network.login_address})",
                SelectTypeParameters="SelectTypeParameters=CR_Core_Memory,CR_LLN",
                SlurmdPidFile=f"SlurmdPidFile={base}/slurmd-%n.pid",
                SlurmdLogFile=f"SlurmdLogFile={base}/slurmd-%n.log",
                SlurmdSpoolDir=f"SlurmdSpoolDir={base}/spool-%n",
                NodeName="\n".join(
                    f"NodeName={n.name} NodeAddr={n.address} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN"
                    for n in network.nodes
                )
                + f"\nTaskProlog={prolog}",
                PartitionName=f"PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP",
            )
        )
        # In the foreground (-D), so that each daemon's pid is the one started here.
        with open(base / "daemons.log", "ab") as log:
            daemons.append(
                subprocess.Popen(
                    [binaries["slurmctld"], "-D", "-c", "-f", str(conf)], env=full_env, stdout=log, stderr=log
                )
            )
            network.adopt(daemons[0].pid)  # removed with the nodes, should this process die first
            for node in network.nodes:
                daemons.append(
                    subprocess.Popen(
                        node.command(binaries["slurmd"], "-D", "-N", node.name, "-f", str(conf)),
                        env={**full_env, "HOME": str(node.home)},
                        stdout=log,
                        stderr=log,
                    )
                )
        slurm = SlurmNodes(base, env, stop, network=network)
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run(
                [binaries["sinfo"], "-h", "-N", "-o", "%N %t"], env=full_env, capture_output=True, text=True
            )
            states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
            if out.returncode == 0 and set(states) == {n.name for n in network.nodes}:
                if all(state in ("idle", "mix", "alloc") for state in states.values()):
                    slurm.setup_seconds = round(time.monotonic() - started, 2)
                    return slurm
            dead = [
                who
                for who, d in zip(["slurmctld", *(f"slurmd on {n.name}" for n in network.nodes)], daemons)
                if d.poll() is not None
            ]
            if dead or time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"SLURM's nodes did not come up (sinfo: {out.stdout.strip() or out.stderr.strip()}"
                    f"{'; exited: ' + repr(dead) if dead else ''}); see {base}/slurmctld.log, "
                    f"{base}/slurmd-<node>.log and {base}/daemons.log"
                )
            time.sleep(0.2)
    except BaseException:
        stop()
        raise


def start_gridengine_nodes(base: Path, nodes: int = 2, slots: int = 4) -> GridEngine:
    """A Grid Engine whose execution hosts are ``nodes`` compute nodes ``node1``,
    ``node2``... (see :mod:`tests.nodes`): qmaster on this host (the login node), an execd
    in each node's network namespace, under its hostname.  A job's HOME is its node's own
    folder, ``base/home/<node>``: Grid Engine sets HOME from passwd, and each node's passwd
    says so.  ``stop()`` removes the network with the rest."""
    _need_root("Grid Engine")
    started = time.monotonic()
    network = create_nodes(base, nodes)
    try:
        grid = start_gridengine(base, slots, network=network)
    except BaseException:
        network.remove()
        raise
    grid.network = network
    try:  # qmaster is removed with the nodes, should this process die before stop()
        network.adopt(int((base / "qmaster" / "qmaster.pid").read_text()))
    except (OSError, ValueError):
        pass
    grid.setup_seconds = round(time.monotonic() - started, 2)
    return grid
