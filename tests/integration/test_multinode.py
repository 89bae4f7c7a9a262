"""Campaigns on batch systems of two compute nodes (the ``slurm_nodes``, ``pbs_nodes`` and
``gridengine_nodes`` fixtures; tests/nodes.py).

The controller and the Dask scheduler run on this host, the login node; every worker is a
batch job on node1 or node2, network namespaces with addresses of their own on a bridge to
the login node, hostnames of their own and a HOME that is not the controller's.  A worker
reaches the scheduler only across that bridge, at the address the profile's
``scheduler-options`` names; the database is the embedded PostgreSQL's Unix socket, which
the nodes see through the shared filesystem, as a cluster's nodes see NFS (it need not
listen on the bridge).  PBS's commands run on the SLURM's nodes, through SLURM; Grid
Engine has two nodes of its own.  The batch systems behave the same under either
database, so these run on PostgreSQL only.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.batch_campaigns import Watch, ledger_lines, queue_empties, write_profile
from tests.integration.test_jobs_engine import seed_ledger as seed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("nodes"),
    pytest.mark.parametrize("server", ["postgres"], indirect=True),
]


def where_lines(path: Path) -> list[tuple[int, str, str, str]]:
    """The lines make() wrote to ``DJDASK_TEST_WHERE``: (key, hostname, HOME, batch job id)."""
    if not path.exists():
        return []
    return [
        (int(k), host, home, job) for k, host, home, job in (line.split() for line in path.read_text().splitlines())
    ]


#: The fixture of each kind's batch system on nodes.
SYSTEMS = {"slurm": "slurm_nodes", "pbs": "pbs_nodes", "sge": "gridengine_nodes"}


@pytest.mark.parametrize("kind", list(SYSTEMS))
def test_ledger_runs_on_both_nodes_each_key_once(server, djdask, sql, prefix, kind, request, tmp_path):
    """`djdask populate ledger --cluster test<kind>` (SLURM, PBS's commands on that SLURM,
    Grid Engine) with the scheduler on the login node's bridge address: every make() ran in a batch
    job on node1 or node2 (its hostname and HOME are the node's, not the login node's), both
    nodes made keys, each key exactly once, and nothing is left reserved or queued.  Failing,
    a worker would have run on the login node, on one node only, reached the scheduler some
    other way than the bridge, or a key would have been made twice or never."""
    system = request.getfixturevalue(SYSTEMS[kind])
    network = system.slurm.network if kind == "pbs" else system.network
    n = 24
    seed(djdask, n)
    ledger, where = tmp_path / "ledger.txt", tmp_path / "where.txt"
    login = network.login_address
    env = djdask.env(
        **system.env,
        **write_profile(tmp_path, kind, **{"scheduler-options": {"host": login}}),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_WHERE=str(where),
        DJDASK_TEST_MAKE_SECONDS="0.5",
    )
    watch = Watch(djdask, system, env)
    code, out, err = watch.wait(240)
    assert code == 0, out + err

    assert Counter(k for k, _, _ in ledger_lines(ledger)) == Counter(range(n)), "a key was made twice or never"
    places = where_lines(where)
    assert sorted(k for k, *_ in places) == list(range(n))
    homes = {node.name: str(node.home) for node in network.nodes}
    per_node = Counter(host for _, host, _, _ in places)
    assert set(per_node) == set(homes), f"make() ran on {dict(per_node)}, not on both nodes {sorted(homes)}"
    assert all(home == homes[host] for _, host, home, _ in places), "a job's HOME was not its node's"
    jobs = {job for *_, job in places}
    assert "-" not in jobs, "a make() ran outside a batch job"
    assert jobs <= watch.ran(), f"make() ran in jobs {jobs}; the queue showed running {watch.ran()}"

    # Each worker listened on its node's address and registered with the scheduler on the bridge.
    # (slurm-wlm-torque's qsub leaves a job's output in the folder it was submitted from, as
    # <script>.o<job> and .e<job>, whatever log-directory's #PBS -o and -e say.)
    outputs = [*(tmp_path / f"{kind}-logs").glob("*"), *tmp_path.glob("*.sh.[eo][0-9]*")]
    logs = "".join(p.read_text() for p in outputs)
    node_addresses = {node.address for node in network.nodes}
    started = set(re.findall(r"Start worker at:\s+tls://([\d.]+):", logs))
    assert started and started <= node_addresses, f"workers listened at {started}, not on {node_addresses}"
    assert set(re.findall(r"Registered to:\s+tls://([\d.]+):", logs)) == {login}

    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry") == {}, "keys left reserved"
    assert queue_empties(system), f"jobs left in the queue: {system.queue()}"
    cluster = system.slurm if kind == "pbs" else system
    print(f"{kind}: two nodes up in {cluster.setup_seconds} s; keys per node {dict(per_node)}")
