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

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.batch_campaigns import JOB_NAME, Said, Watch, ledger_lines, queue_empties, write_profile
from tests.integration.test_jobs_engine import seed_ledger as seed
from tests.integration.test_jobs_that_never_join import assert_stopped_cleanly, populate_timed
from tests.integration.test_populate import INSERT_DEMO, assert_same_rows

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["postgres"], indirect=True)]

#: The xdist group of each kind's tests: one worker for the two-node SLURM (and PBS's commands
#: on it), another for the two-node Grid Engine, which has a network of its own.
GROUPS = {"slurm": "nodes", "pbs": "nodes", "sge": "sge-nodes"}


def kinds(*names: str) -> list:
    """The ``kind`` parameters, each in its batch system's xdist group."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(GROUPS[name])) for name in names]


def where_lines(path: Path) -> list[tuple[int, str, str, str]]:
    """The lines make() wrote to ``DJDASK_TEST_WHERE``: (key, hostname, HOME, batch job id)."""
    if not path.exists():
        return []
    return [
        (int(k), host, home, job) for k, host, home, job in (line.split() for line in path.read_text().splitlines())
    ]


#: The fixture of each kind's batch system on nodes.
SYSTEMS = {"slurm": "slurm_nodes", "pbs": "pbs_nodes", "sge": "gridengine_nodes"}


@pytest.mark.parametrize("kind", kinds(*SYSTEMS))
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


@pytest.mark.parametrize("kind", kinds("slurm", "sge"))
def test_reference_pipeline_on_two_nodes_matches_a_local_cluster_run(
    server, djdask, sql, prefix, kind, request, tmp_path
):
    """`djdask populate djdask.pipeline --cluster test<kind>` with its workers on node1 and
    node2 gives the same rows as a LocalCluster run of the same pipeline on this host; every
    worker listened on a node's address; nothing is left queued."""
    system = request.getfixturevalue(SYSTEMS[kind])
    assert djdask.python(INSERT_DEMO).returncode == 0
    env = djdask.env(**node_profile(tmp_path, system))
    result = djdask("populate", "djdask.pipeline", "--cluster", f"test{kind}", env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    logs = "".join(p.read_text() for p in (tmp_path / f"{kind}-logs").glob("*"))
    started = set(re.findall(r"Start worker at:\s+tls://([\d.]+):", logs))
    assert started and started <= {node.address for node in system.network.nodes}, started

    other = f"{prefix}loc"
    local_env = djdask.env(DASK_DJDASK__DEMO__SCHEMA_PREFIX=other)
    seeded = subprocess.run(
        [sys.executable, "-c", INSERT_DEMO], env=local_env, cwd=djdask.cwd, capture_output=True, text=True, timeout=120
    )
    assert seeded.returncode == 0, seeded.stderr
    local = djdask("populate", "djdask.pipeline", "--workers", "2", env=local_env)
    assert local.returncode == 0, local.stdout + local.stderr
    assert_same_rows(sql, prefix, other, "the LocalCluster run")
    assert queue_empties(system), f"jobs left in the queue: {system.queue()}"


@contextmanager
def unreachable_address(network):
    """A second address of the login node, on the bridge, that the nodes have no route to (an
    `unreachable` route in each node's namespace): a scheduler there is cut off from the
    nodes while the batch system, on the login node's first address, still runs their jobs."""
    address = str(network.subnet.network_address + 254)
    subprocess.run(["ip", "addr", "add", f"{address}/{network.subnet.prefixlen}", "dev", network.bridge], check=True)
    for node in network.nodes:
        subprocess.run(["ip", "netns", "exec", node.namespace, "ip", "route", "add", "unreachable", f"{address}/32"],
                       check=True)  # fmt: skip
    try:
        yield address
    finally:
        for node in network.nodes:
            subprocess.run(["ip", "netns", "exec", node.namespace, "ip", "route", "del", f"{address}/32"], check=False)
        subprocess.run(["ip", "addr", "del", f"{address}/{network.subnet.prefixlen}", "dev", network.bridge],
                       check=False)  # fmt: skip


def node_profile(tmp_path: Path, system, **settings) -> dict[str, str]:
    """The batch system's environment and a `test<kind>` profile whose workers reach the
    scheduler across the bridge, at the login node's address."""
    login = {"scheduler-options": {"host": system.network.login_address}}
    return {**system.env, **write_profile(tmp_path, system.kind, **{**login, **settings})}


@pytest.mark.parametrize("kind", kinds("slurm", "sge"))
def test_a_node_cut_off_from_the_scheduler_is_explained(server, djdask, sql, prefix, kind, request, tmp_path):
    """The scheduler listens on an address the nodes have no route to. The campaign says, while
    the job runs on its node, that its worker has not reached the scheduler at that address;
    when the job ends at its death timeout it stops (exit 2) naming `interface` and
    `scheduler-options`. `clusters check` on the same profile fails at `started`. Nothing is left
    reserved or queued, no traceback."""
    system = request.getfixturevalue(SYSTEMS[kind])
    seed(djdask, 4)
    with unreachable_address(system.network) as address:
        settings = {
            "scheduler-options": {"host": address},
            "death-timeout": 20,
            "report-pending-after": "5s",
            "max-failed-starts": 1,
        }
        env = djdask.env(
            **system.env, **write_profile(tmp_path, kind, **settings), DJDASK_TEST_LEDGER=str(tmp_path / "l.txt")
        )
        run = Said(djdask, env, "populate", "ledger", "--cluster", f"test{kind}")
        result = run.finish(150)
        assert_stopped_cleanly(result, sql, prefix, system, queue_timeout=15)
        ended = run.after_job_end(tmp_path / f"{kind}-logs")
        assert ended and max(ended.values()) < 60, f"the job's end was said {ended} s after it"
        said = re.search(
            r"Worker job \d+ has run on (node\d) for \d+ s, but its worker has not joined: it cannot reach the "
            rf"scheduler at tls://{re.escape(address)}:\d+",
            result.stderr,
        )
        assert said, result.stderr
        stop = result.stderr.split("djdask: Profile")[-1]
        assert "Likely fix: the workers cannot reach the scheduler" in stop and "scheduler-options" in stop, stop

        check = djdask("clusters", "check", f"test{kind}", env=env, timeout=240)
        assert check.returncode == 2 and "fail    started" in check.stdout, check.stdout + check.stderr
        assert "cannot reach the scheduler" in check.stderr and "Traceback" not in check.stderr
        assert queue_empties(system, timeout=15)
    ran = int(re.search(r"has run on node\d for (\d+) s", result.stderr).group(1))
    print(
        f"{kind} cut off: said while the job ran, after {ran} s of it running (report-pending-after 5 s); its end "
        f"(the worker's death timeout, 20 s) said after {ended} s"
    )


#: A prologue line that fails as a `module load` of a module the site lacks would.
PROLOGUE = ["echo ERROR: Unable to locate a modulefile for lab-env/2.1 1>&2", "exit 3"]
#: What each batch system says of a job ended by that prologue.
PROLOGUE_SAID = {"slurm": "slurm says FAILED, exit code 3:0", "sge": "sge says ended, exit code 3"}


@pytest.mark.parametrize("kind", kinds("slurm", "sge"))
def test_a_failing_prologue_line_on_a_node_is_quoted(server, djdask, sql, prefix, kind, request, tmp_path):
    """A prologue line fails on the node: the campaign says each ended job with the batch
    system's state and exit code and quotes the line's message; after 2 (max-failed-starts)
    it stops, exit 2, naming the profile's `job-script-prologue`.  `clusters check` fails at
    `started` with the same words."""
    system = request.getfixturevalue(SYSTEMS[kind])
    seed(djdask, 3)
    env = djdask.env(
        **node_profile(tmp_path, system, **{"job-script-prologue": PROLOGUE, "max-failed-starts": 2}),
        DJDASK_TEST_LEDGER=str(tmp_path / "l.txt"),
    )
    result, took, ended = populate_timed(djdask, env, kind, tmp_path)
    assert_stopped_cleanly(result, sql, prefix, system, queue_timeout=15)
    assert len(ended) >= 2, f"each job's end was said {ended} s after it"
    assert re.search(rf"Worker job \d+ on node\d ended before its worker joined the scheduler: {PROLOGUE_SAID[kind]}",
                     result.stderr), result.stderr  # fmt: skip
    assert "    ERROR: Unable to locate a modulefile for lab-env/2.1" in result.stderr, result.stderr
    assert "2 worker jobs in a row" in result.stderr
    assert f"`djdask.clusters.test{kind}.job-script-prologue`" in result.stderr

    check = djdask("clusters", "check", f"test{kind}", env=env, timeout=240)
    assert check.returncode == 2 and "fail    started" in check.stdout, check.stdout + check.stderr
    assert "Unable to locate a modulefile for lab-env/2.1" in check.stderr, check.stderr
    assert f"djdask.clusters.test{kind}.job-script-prologue" in check.stderr and "Traceback" not in check.stderr
    assert queue_empties(system, timeout=15), f"jobs left in the queue: {system.queue()}"
    print(f"{kind}, failing prologue on nodes: each job's end said after {ended} s; gave up after {took:.1f} s")


#: How each batch system is told to hold a job, and the reason it then gives.
HOLD = {
    "slurm": ("--begin=now+2hours", "slurm says PENDING (BeginTime)"),
    "sge": ("-h", "sge says hqw (Job is in hold state)"),
}


@pytest.mark.parametrize("kind", kinds("slurm", "sge"))
def test_a_job_held_pending_is_said_with_the_batch_systems_reason(server, djdask, sql, prefix, kind, request, tmp_path):
    """A worker job held in the queue (SLURM: --begin=now+2hours; Grid Engine: a hold) is said
    once report-pending-after has passed, with the batch system's own reason, and once only
    for both jobs; Ctrl-C then stops the campaign, its keys released and its jobs cancelled.
    `clusters check --timeout 20s` fails at `started` giving the same reason."""
    system = request.getfixturevalue(SYSTEMS[kind])
    directive, reason = HOLD[kind]
    seed(djdask, 3)
    env = djdask.env(
        **node_profile(tmp_path, system, **{"job-extra-directives": [directive], "report-pending-after": "5s"}),
        DJDASK_TEST_LEDGER=str(tmp_path / "l.txt"),
        PYTHONUNBUFFERED="1",
    )
    run = Said(djdask, env, "populate", "ledger", "--cluster", f"test{kind}")
    try:
        deadline = time.monotonic() + 90
        while not [j for j in system.queue() if j["name"] == JOB_NAME]:
            assert time.monotonic() < deadline and run.proc.poll() is None, "no worker job was submitted"
            time.sleep(0.2)
        queued = time.time()
        time.sleep(15)  # 5 s pending, then the watch's next look and the loop's
    finally:
        err = run.finish(90, stop=signal.SIGINT).stderr
    pattern = rf"Worker jobs? ([\d, ]+) ha(?:s|ve) waited (\d+) s in the queue: {re.escape(reason)}"
    said = re.search(pattern, err)
    assert said, err
    assert int(said.group(2)) >= 5
    late = run.when(pattern)[0][0] - (queued + 5)
    assert late < 60, f"said {late:.1f} s after the job had waited report-pending-after"
    assert err.count("in the queue:") == 1, err  # said once for both jobs, not at every look
    assert "Traceback" not in err, err
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    assert queue_empties(system, timeout=15), f"jobs left in the queue: {system.queue()}"

    check = djdask("clusters", "check", f"test{kind}", "--timeout", "20s", env=env, timeout=120)
    assert check.returncode == 2 and "fail    started" in check.stdout, check.stdout + check.stderr
    assert reason in check.stderr and "Traceback" not in check.stderr, check.stderr
    assert queue_empties(system, timeout=15), f"jobs left in the queue: {system.queue()}"
    print(f"{kind}, held pending: said {late:.1f} s after the job had waited report-pending-after (5 s)")


@pytest.mark.parametrize("kind", kinds("slurm", "sge"))
def test_clusters_check_on_nodes_passes_and_finds_a_python_the_nodes_lack(
    server, djdask, sql, prefix, kind, request, tmp_path
):
    """`djdask clusters check test<kind> ledger` on two nodes: every step passes, the node
    named is a compute node and its HOME is not the login node's; with a python the nodes do not
    have, it fails at `started` quoting the job, and a campaign on that profile stops, exit 2,
    naming `python`, with nothing left reserved or queued."""
    system = request.getfixturevalue(SYSTEMS[kind])
    login = system.network.login_address
    (tmp_path / "good").mkdir()
    env = djdask.env(**system.env, **write_profile(tmp_path / "good", kind, **{"scheduler-options": {"host": login}}))
    good = djdask("clusters", "check", f"test{kind}", "ledger", "--json", env=env, timeout=240)
    assert good.returncode == 0, good.stdout + good.stderr
    steps = {s["step"]: s for s in json.loads(good.stdout)["steps"]}
    assert all(s["result"] == "ok" for s in steps.values()), steps
    assert re.search(r"\bon (node\d|10\.213\.\d+\.\d+)\b", steps["started"]["detail"]), steps["started"]
    assert re.match(r"node\d reached tls://", steps["scheduler"]["detail"]), steps["scheduler"]

    seed(djdask, 3)
    (tmp_path / "bad").mkdir()
    bad_env = djdask.env(
        **system.env,
        **write_profile(tmp_path / "bad", kind, python="/nonexistent/env/bin/python3",
                        **{"scheduler-options": {"host": login}}),
        DJDASK_TEST_LEDGER=str(tmp_path / "l.txt"),
    )  # fmt: skip
    check = djdask("clusters", "check", f"test{kind}", env=bad_env, timeout=240)
    assert check.returncode == 2 and "fail    started" in check.stdout, check.stdout + check.stderr
    assert "/nonexistent/env/bin/python3" in check.stderr and f"djdask.clusters.test{kind}.python" in check.stderr
    campaign = djdask("populate", "ledger", "--cluster", f"test{kind}", env=bad_env, timeout=240)
    assert campaign.returncode == 2, campaign.stdout + campaign.stderr
    assert re.search(r"Worker job \d+ on node\d ended before its worker joined the scheduler", campaign.stderr), (
        campaign.stderr
    )
    assert "Traceback" not in campaign.stderr + check.stderr
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    assert queue_empties(system, timeout=15), f"jobs left in the queue: {system.queue()}"
