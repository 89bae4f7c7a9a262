"""Compute nodes that cannot reach the database (issue 32), on the two-node SLURM of
tests/nodes.py: the database is MariaDB listening on this host's loopback only, which no
node has a route to (the test proves a connection from each node fails).  The reference
pipeline's tripartite tables go to a profile with ``database: none`` whose workers are jobs
on node1 and node2; their ``make_fetch`` and insert run on the database side on this host.
The rows equal DataJoint's own ``populate()``; no worker on a node ever saw the database
password or the S3 secret (their environments read from /proc while they ran, the job
scripts the batch system kept, their logs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.batch_campaigns import Said, queue_empties
from tests.integration.test_jobs_engine import wait_for
from tests.integration.test_multinode import node_profile
from tests.integration.test_populate import INSERT_DEMO, assert_same_rows, populate_as_datajoint
from tests.integration.test_split import assert_each_key_inserted_once

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("nodes"),
    pytest.mark.parametrize("server", ["mariadb"], indirect=True),
]

#: The reference pipeline's tripartite tables, routed to the pool without database access.
SPLIT = ("MotionCorrection", "Segmentation", "Traces", "CellStats")

#: Stands for the object store's secret in the controller's environment: no node may see it.
S3_SECRET = "s3-secret-that-stays-on-the-login-node"

CONNECT = (
    "import sys, pymysql\n"
    "try:\n"
    "    pymysql.connect(host=sys.argv[1], port=int(sys.argv[2]), user='x', password='x', connect_timeout=3)\n"
    "except pymysql.err.OperationalError as err:\n"
    "    print(err.args[0]); sys.exit(3)\n"
)


class Environments:
    """Reads the environment of every process in the nodes' namespaces while a campaign runs."""

    def __init__(self, network) -> None:
        self.network, self.seen, self.scripts = network, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for node in self.network.nodes:
                pids = subprocess.run(["ip", "netns", "pids", node.namespace], capture_output=True, text=True)
                for pid in pids.stdout.split():
                    try:
                        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
                    except OSError:  # ended meanwhile
                        continue
                    self.seen[(node.name, pid)] = (command, environ)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def workers(self) -> dict:
        return {k: v for k, v in self.seen.items() if "dask_worker" in v[0] or "distributed.cli" in v[0]}


def split_on_nodes(djdask, system, tmp_path: Path, tables: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a campaign over tests/pipelines/split.py whose ``tables`` go to the
    pools named (``compute``: the nodes' profile, ``database: none``)."""
    env = djdask.env(**node_profile(tmp_path, system, database="none"), **extra)
    config = Path(env["DASK_CONFIG"]) / "djdask.yaml"
    config.write_text(config.read_text() + "  campaign:\n    pools: " + json.dumps(tables) + "\n")
    return env


def campaign_on_nodes(system) -> tuple[str, ...]:
    """`djdask populate split` with its `compute` pool on the nodes, its default one here."""
    return (
        "populate",
        "split",
        "--cluster",
        "default=local",
        "--cluster",
        f"compute=test{system.kind}",
        "--workers",
        "1",
    )


def until_started(run: Said, marker: Path) -> None:
    """Wait until a make_compute touches ``marker`` (the campaign still running)."""
    wait_for(lambda: marker.exists() or run.proc.poll() is not None, 180, f"{marker.name}")
    assert run.proc.poll() is None, run.stdout + run.stderr


def test_reference_pipeline_split_across_nodes_without_database_access(
    server, djdask, sql, prefix, slurm_nodes, tmp_path
):
    system = slurm_nodes
    network = system.network
    port = server.env["DJ_PORT"]
    for node in network.nodes:
        for host in ("127.0.0.1", network.login_address):
            tried = node.run(sys.executable, "-c", CONNECT, host, port, timeout=30)
            assert tried.returncode == 3, f"{node.name} reached the database at {host}:{port}: {tried}"

    assert djdask.python(INSERT_DEMO).returncode == 0
    env = split_on_nodes(
        djdask, system, tmp_path, dict.fromkeys(SPLIT, "compute"), AWS_SECRET_ACCESS_KEY=S3_SECRET,
        DASK_DJDASK__DEMO__TRIPARTITE="true",  # its Computed tables' make() DataJoint's tripartite driver
    )  # fmt: skip
    watch = Environments(network)
    try:
        result = djdask(
            "populate", "djdask.pipeline", "--cluster", "default=local", "--cluster", f"compute=test{system.kind}",
            "--workers", "2", env=env, timeout=300,
        )  # fmt: skip
    finally:
        watch.stop()
    assert result.returncode == 0, result.stdout + result.stderr

    workers = watch.workers()
    assert {node for node, _ in workers} == {n.name for n in network.nodes}, f"workers seen on {set(workers)}"
    password = server.env["DJ_PASS"]
    for (node, _pid), (command, environ) in workers.items():
        assert "DJDASK_DATABASE=none" in environ, (node, command)
        assert password not in environ and S3_SECRET not in environ, f"a worker on {node} was given a credential"
        assert not re.search(r"(^|\0)(DJ_|AWS_)", environ), (
            node,
            sorted(re.findall(r"(?:^|\0)((?:DJ|AWS)_\w+)", environ)),
        )
    script = djdask("clusters", "script", f"test{system.kind}", env=env)
    assert script.returncode == 0 and "DJDASK_DATABASE=none" in script.stdout, script.stdout + script.stderr
    assert password not in script.stdout and S3_SECRET not in script.stdout
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / f"{system.kind}-logs").glob("*"))
    assert logs and password not in logs and S3_SECRET not in logs

    other = f"{prefix}seq"
    populate_as_datajoint(djdask, other)
    assert_same_rows(sql, prefix, other, "DataJoint's populate()")
    assert queue_empties(system), f"jobs left in the queue: {system.queue()}"


def test_a_node_lost_mid_compute_loses_no_key(server, djdask, sql, prefix, slurm_nodes, tmp_path):
    """The worker job computing key 2 dies with its node (its nanny and worker killed, no exit
    report): the key's make_compute runs again in another job, uncharged, as does any key
    whose result died with the job before the database side had it; every key is inserted
    once, none is an error, none left reserved, nothing left queued."""
    import psutil

    system = slurm_nodes
    n = 4
    started = tmp_path / "started"
    started.mkdir()
    env = split_on_nodes(
        djdask, system, tmp_path, {"Result": "compute"}, DJDASK_TEST_MAKE_SECONDS="3",
        DJDASK_TEST_STARTED=str(started), DJDASK_TEST_WHERE=str(tmp_path / "where.txt"),
        DASK_DJDASK__CAMPAIGN__MAX_BATCH_SIZE="1",
    )  # fmt: skip
    seeded = djdask.python(f"import split; split.seed({n})", env=env)
    assert seeded.returncode == 0, seeded.stderr
    run = Said(djdask, env, *campaign_on_nodes(system), "--target", "Result")
    try:
        until_started(run, started / "2.started")
        worker = psutil.Process(int((started / "2.started").read_text()))
        for process in (worker.parent(), worker):  # the nanny first: no report of the worker's end
            process.kill()
        result = run.finish(240)
    finally:
        run.finish(5)
    assert result.returncode == 0, result.stdout + result.stderr
    # The killed make_compute wrote no line; a key whose result the lost job still held (made,
    # not yet sent back) is computed again: every key computed, key 2 once more.
    computed = Counter(int(line.split()[0]) for line in (tmp_path / "where.txt").read_text().splitlines())
    assert set(computed) == set(range(n)) and computed[2] == 1, computed
    assert_each_key_inserted_once(sql, prefix, n)
    assert queue_empties(system), f"jobs left in the queue: {system.queue()}"


def test_inputs_changed_on_the_database_side_while_a_node_computes_give_datajoints_error(
    server, djdask, sql, prefix, slurm_nodes, tmp_path
):
    """While key 0's make_compute runs on a node, the row its make_fetch read beyond its
    foreign keys changes: its insert, back on the database side, gives DataJoint's own error
    row, once; nothing is inserted, nothing left reserved or queued.  A plain make(key)
    routed to the nodes is refused first (exit 2), before any job is submitted or row written."""
    system = slurm_nodes
    started = tmp_path / "started"
    started.mkdir()
    env = split_on_nodes(djdask, system, tmp_path, {"Result": "compute", "Plain": "compute"},
                         DJDASK_TEST_MAKE_SECONDS="4", DJDASK_TEST_STARTED=str(started))  # fmt: skip
    seeded = djdask.python("import split; split.seed(1)", env=env)
    assert seeded.returncode == 0, seeded.stderr
    refused = djdask(*campaign_on_nodes(system), "--target", "Plain", env=env, timeout=120)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "Table Plain is routed to pool 'compute'" in said, refused.stdout + said
    assert not system.queue() and "Traceback" not in said
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_split', '__plain')}") == 0
    assert not sql.jobs_counts(f"{prefix}_split", "__plain")

    run = Said(djdask, env, *campaign_on_nodes(system), "--target", "Result")
    try:
        until_started(run, started / "0.started")
        sql.query(f"UPDATE {sql.table(prefix + '_split', 'gain')} SET gain = 2.0 WHERE day = 1")
        result = run.finish(180)
    finally:
        run.finish(5)
    assert result.returncode == 1, result.stdout + result.stderr  # the campaign ends with an error row
    errors = sql.query(f"SELECT error_message FROM {sql.table(prefix + '_split', '~~result')} WHERE status = 'error'")
    assert [e[0] for e in errors] == ["DataJointError: Referential integrity failed! The `make_fetch` data has changed"]
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_split', '__result')}") == 0
    assert queue_empties(system), f"jobs left in the queue: {system.queue()}"
