"""Compute nodes on this one machine: Linux network namespaces on a bridge.

The login node is this host's own network namespace; it takes the bridge's first
address.  Each compute node is a network namespace with one veth on that bridge,
an address of its own from the same small private subnet and that subnet's route
only: no default route and no NAT, so a node reaches the login node and the other
nodes and nothing else.  A program started with :meth:`Node.command` runs in the
node's namespace under the node's hostname (a UTS namespace of its own).

The filesystem stays shared, as NFS shares it on a real cluster: the project's
venv, the test's folders and Unix sockets (munge's, the embedded PostgreSQL's)
are seen from every node.  Each node has a HOME folder of its own, which the
batch system sets in its jobs' environment.

Needs root, iproute2 (``ip``) and util-linux (``nsenter``, ``unshare``, ``mount``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.services import ServiceUnavailable

__all__ = ["Node", "NodeNetwork", "create_nodes"]

#: The subnets the nodes' networks are taken from: 10.213.<n>.0/24, the first one unused on this host.
SUBNETS = ipaddress.ip_network("10.213.0.0/16")
#: Held while a network picks its subnet, so that two starters never take the same one.
_LOCK = Path(tempfile.gettempdir()) / "djdask-test-nodes.lock"
#: What each network made and the pid of the test process that made it: a network whose
#: test process died without removing it (killed) is removed by the next one to start.
_RECORDS = Path(tempfile.gettempdir()) / "djdask-test-nodes"


@dataclass(frozen=True)
class Node:
    """A compute node: its hostname, its address on the bridge, its network namespace and HOME.

    Its programs see an /etc/hosts of the nodes' own (bind-mounted in a mount namespace),
    as a cluster's nodes resolve each other's names: Dask's worker, finding no route to
    the Internet (none here), takes its address from its hostname, and without a name to
    resolve it would listen on 127.0.0.1, which the scheduler cannot reach.  Its /etc/passwd
    gives root the node's HOME, which a batch system that sets HOME from passwd (Grid
    Engine) gives its jobs."""

    name: str
    address: str
    namespace: str
    home: Path
    #: The nodes' /etc/hosts: every node's name and the login node's, with their addresses.
    hosts: Path
    #: This node's /etc/passwd: this host's, but root's home is ``home``.
    passwd: Path

    def command(self, *args: str) -> list[str]:
        """``args`` as a command line that runs them on this node: in its network
        namespace, under its hostname (``hostname`` then ``exec``: the pid is the program's)."""
        # nsenter, not `ip netns exec`: that one mounts a sysfs of the namespace's own, without
        # /sys/fs/cgroup, and slurmd refuses to start without it.
        net = f"--net=/run/netns/{self.namespace}"
        setup = (
            f'hostname "$0" && mount --bind {self.hosts} /etc/hosts && mount --bind {self.passwd} /etc/passwd '
            '&& exec "$@"'
        )
        return ["nsenter", net, "unshare", "--uts", "--mount", "sh", "-c", setup, self.name, *args]

    def run(self, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run ``args`` on this node and wait for it (output captured as text)."""
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )


@dataclass
class NodeNetwork:
    """The bridge (``login_address`` on this host) and the nodes on it; :meth:`remove`
    ends every process left in the nodes and deletes the namespaces, veths and bridge."""

    bridge: str
    subnet: ipaddress.IPv4Network
    login_address: str
    nodes: list[Node] = field(default_factory=list)
    #: The veths' ends on the bridge.
    links: list[str] = field(default_factory=list)
    #: Daemons on the login node that serve these nodes: (pid, start time), see :meth:`adopt`.
    daemons: list[tuple[int, str]] = field(default_factory=list)
    _removed: bool = field(default=False, repr=False)

    def remove(self) -> None:
        """Undo everything :func:`create_nodes` made; safe to call twice, or on a half-made network."""
        if self._removed:
            return
        self._removed = True
        _remove(self.bridge, [node.namespace for node in self.nodes], self.links, self.daemons)

    def adopt(self, pid: int) -> None:
        """Make ``pid``, a daemon a starter ran on the login node for these nodes, one that
        the network's removal ends too, even by another test process (see :func:`_sweep`)."""
        self.daemons.append((pid, _started(pid)))
        self._record()

    def _record(self) -> None:
        """Write down what exists so far, for :func:`_sweep` should this process die first."""
        _RECORDS.mkdir(exist_ok=True)
        made = {
            "pid": os.getpid(),
            "namespaces": [n.namespace for n in self.nodes],
            "links": self.links,
            "daemons": self.daemons,
        }
        (_RECORDS / f"{self.bridge}.json").write_text(json.dumps(made))


def _started(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot; "" if it is gone or a zombie): a pid and
    this make one process, where a pid alone may have been reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    return "" if fields[0] == "Z" else fields[19]


def _remove(bridge: str, namespaces: list[str], links: list[str], daemons: list[tuple[int, str]]) -> None:
    """End the ``daemons`` still running (the same pid and start time) and every process in
    ``namespaces`` (each was started there by a test), delete the namespaces, the veths
    ``links`` and the bridge, and their record."""
    own = [pid for pid, started in daemons if started and _started(pid) == started]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid for namespace in namespaces for pid in _namespace_pids(namespace)]
        pids += [pid for pid in own if _started(pid)]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [pid for namespace in namespaces for pid in _namespace_pids(namespace)]
            pids += [pid for pid in own if _started(pid)]
            time.sleep(0.1)
        if not pids:
            break
    for link in links:  # deleting a namespace deletes its veths too, but some time later
        _ip("link", "del", link, check=False)
    for namespace in namespaces:
        _ip("netns", "del", namespace, check=False)
    _ip("link", "del", bridge, check=False)
    (_RECORDS / f"{bridge}.json").unlink(missing_ok=True)


def _sweep() -> None:
    """Remove the networks whose test process is gone (killed before its teardown)."""
    for record in _RECORDS.glob("djb*.json") if _RECORDS.is_dir() else ():
        try:
            made = json.loads(record.read_text())
            os.kill(made["pid"], 0)
        except ProcessLookupError:
            _remove(record.stem, made["namespaces"], made["links"], [tuple(d) for d in made.get("daemons", [])])
        except (OSError, ValueError, KeyError):
            pass


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise ServiceUnavailable(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _namespace_pids(namespace: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def _free_subnet() -> ipaddress.IPv4Network:
    """The first 10.213.<n>.0/24 that no address or route of this host overlaps."""
    used = []
    for line in (_ip("-4", "-o", "addr", "show") + "\n" + _ip("-4", "route", "show", "table", "all")).splitlines():
        for word in line.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    for subnet in SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(other) for other in used if other.prefixlen > 0):
            return subnet
    raise ServiceUnavailable(f"no /24 of {SUBNETS} is free on this host for the test nodes")


def create_nodes(base: Path, count: int = 2) -> NodeNetwork:
    """``count`` compute nodes ``node1``, ``node2``... (addresses .2, .3... of a free
    10.213.<n>.0/24) on a new bridge whose address (.1) is the login node's; each node's
    HOME is ``base/home/<node>``.  Checks that every node reaches the login node."""
    if os.geteuid() != 0:
        raise ServiceUnavailable("network namespaces for the test nodes need root")
    missing = [tool for tool in ("ip", "nsenter", "unshare") if shutil.which(tool) is None]
    if missing:
        raise ServiceUnavailable(f"{', '.join(missing)} missing: apt-get install iproute2 util-linux")
    base.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(3)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _sweep()
        subnet = _free_subnet()
        hosts = list(subnet.hosts())
        network = NodeNetwork(f"djb{token}", subnet, str(hosts[0]))
        try:
            network._record()
            _ip("link", "add", network.bridge, "type", "bridge")
            _ip("addr", "add", f"{network.login_address}/{subnet.prefixlen}", "dev", network.bridge)
        except BaseException:
            network.remove()
            raise
    try:
        # No IPv6 on the bridge: no router solicitations or link-local chatter, only the test's traffic.
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{network.bridge}.disable_ipv6=1"], capture_output=True)
        _ip("link", "set", network.bridge, "up")
        etc_hosts = base / "hosts"
        etc_hosts.write_text(
            "127.0.0.1 localhost\n"
            f"{network.login_address} {socket.gethostname()} login\n"  # the real name first: the reverse lookup's
            + "".join(f"{hosts[i]} node{i}\n" for i in range(1, count + 1))
        )
        for i in range(1, count + 1):
            home = base / "home" / f"node{i}"
            home.mkdir(parents=True, exist_ok=True)
            passwd = base / f"passwd-node{i}"
            passwd.write_text(_with_home(Path("/etc/passwd").read_text(), "root", home))
            node = Node(f"node{i}", str(hosts[i]), f"djdask-{token}-node{i}", home, etc_hosts, passwd)
            network.nodes.append(node)
            network._record()
            _ip("netns", "add", node.namespace)
            outside, inside = f"djv{token}{i}", f"djp{token}{i}"
            network.links.append(outside)
            network._record()
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", node.namespace)
            _ip("link", "set", outside, "master", network.bridge, "up")
            _ip("-n", node.namespace, "link", "set", inside, "name", "eth0")
            _ip("-n", node.namespace, "addr", "add", f"{node.address}/{subnet.prefixlen}", "dev", "eth0")
            _ip("-n", node.namespace, "link", "set", "eth0", "up")
            _ip("-n", node.namespace, "link", "set", "lo", "up")
        _check_reach(network)
    except BaseException:
        network.remove()
        raise
    return network


def _with_home(passwd: str, user: str, home: Path) -> str:
    """``passwd`` (the text of /etc/passwd) with ``user``'s home directory ``home``."""
    lines = []
    for line in passwd.splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) == 7:
            fields[5] = str(home)
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"


def _check_reach(network: NodeNetwork) -> None:
    """Each node connects to a port on the login address, and resolves its own hostname to its address."""
    with socket.create_server((network.login_address, 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.1)
        probe = (
            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close(); "
            "import os, pwd; print(socket.gethostname(), socket.gethostbyname(socket.gethostname()), "
            "pwd.getpwuid(os.getuid()).pw_dir)"
        )
        for node in network.nodes:
            proc = subprocess.Popen(
                node.command(sys.executable, "-c", probe, network.login_address, str(port)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 15
            accepted = False
            while not accepted and proc.poll() is None and time.monotonic() < deadline:
                try:
                    server.accept()[0].close()
                    accepted = True
                except TimeoutError:
                    pass
            out, err = proc.communicate(timeout=15)
            if not accepted or proc.returncode or out.split() != [node.name, node.address, str(node.home)]:
                raise ServiceUnavailable(
                    f"test node {node.name} ({node.address}, namespace {node.namespace}) did not reach the "
                    f"login node at {network.login_address}:{port}: {err.strip() or out.strip() or 'no answer'}"
                )
