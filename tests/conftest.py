"""Fixtures shared by the test suite.

Integration tests run against real servers that these fixtures start: djdask's
embedded PostgreSQL and a private MariaDB instance.  Where a server cannot
start, its tests are skipped on a developer's machine and fail in CI
(``CI=true``): CI must prove both backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.batch_nodes import start_gridengine_nodes, start_slurm_nodes
from tests.batch_systems import pbs_on_slurm, start_gridengine, start_slurm
from tests.services import ServiceUnavailable, start_chromium, start_mariadb, start_postgres, start_s3

ROOT = Path(__file__).resolve().parent.parent
TEST_PIPELINES = Path(__file__).resolve().parent / "pipelines"
#: The environment that gives a campaign Dask's own dashboard (tests default to headless).
DASK_DASHBOARD = {"DASK_DJDASK__CAMPAIGN__DASK_DASHBOARD": "true"}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def start_or_skip(starter, tmp_path_factory, name):
    """``starter`` in a fresh folder ``name``; a server that cannot start skips its tests here, fails them in CI."""
    try:
        server = starter(tmp_path_factory.mktemp(name))
    except (ServiceUnavailable, OSError, subprocess.CalledProcessError) as err:
        if IN_CI:
            pytest.fail(f"{name} could not be started in CI: {err}")
        pytest.skip(f"{name} unavailable: {err}")
    return server


def pytest_configure(config):
    """``--dist loadgroup`` keeps each ``xdist_group`` (one batch system) on one worker; with
    pytest 9.2, pytest-xdist 3.8 can no longer add the group to node ids, and the group's tests
    spread over the workers, each starting its own SLURM and Grid Engine.  Refuse to run so."""
    if hasattr(config, "workerinput") or config.getoption("dist", "no") != "loadgroup":
        return
    if pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} breaks pytest-xdist's --dist loadgroup (tests of one batch system "
            "would run on several workers). Install what the test extra asks for: pip install -e '.[test]'."
        )


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    server = start_or_skip(start_postgres, tmp_path_factory, "postgres")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory):
    server = start_or_skip(start_mariadb, tmp_path_factory, "mariadb")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A single-node SLURM of this xdist worker: the SLURM tests share one (xdist_group "slurm"),
    the PBS tests another (xdist_group "pbs"); each has its own ports and state."""
    cluster = start_or_skip(start_slurm, tmp_path_factory, "slurm")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def slurm_nodes(tmp_path_factory):
    """A SLURM of two compute nodes, node1 and node2: network namespaces on a bridge to this
    host (the login node, ``slurm_nodes.login_address``), each with its own address, hostname,
    HOME and slurmd (see tests/nodes.py).  Tests on nodes share one xdist worker
    (xdist_group "nodes")."""
    cluster = start_or_skip(start_slurm_nodes, tmp_path_factory, "slurm-nodes")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pbs_nodes(slurm_nodes):
    """PBS's qsub/qstat/qdel on the two-node SLURM (tests in xdist_group "nodes")."""
    try:
        return pbs_on_slurm(slurm_nodes)
    except ServiceUnavailable as err:
        if IN_CI:
            pytest.fail(f"PBS on SLURM could not be set up in CI: {err}")
        pytest.skip(f"PBS on SLURM unavailable: {err}")


@pytest.fixture(scope="session")
def pbs(slurm):
    """PBS's qsub/qstat/qdel on this worker's SLURM (tests in xdist_group "pbs")."""
    try:
        return pbs_on_slurm(slurm)
    except ServiceUnavailable as err:
        if IN_CI:
            pytest.fail(f"PBS on SLURM could not be set up in CI: {err}")
        pytest.skip(f"PBS on SLURM unavailable: {err}")


@pytest.fixture(scope="session")
def gridengine(tmp_path_factory):
    """A single-node Grid Engine; tests using it share one xdist worker (xdist_group "sge")."""
    cluster = start_or_skip(start_gridengine, tmp_path_factory, "sge")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def gridengine_nodes(tmp_path_factory):
    """A Grid Engine of two execution hosts, node1 and node2, network namespaces as for
    ``slurm_nodes`` (a network of their own); tests in xdist_group "sge-nodes"."""
    cluster = start_or_skip(start_gridengine_nodes, tmp_path_factory, "sge-nodes")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (moto, own process)."""
    server = start_or_skip(start_s3, tmp_path_factory, "s3")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory):
    """A real S3 server that checks credentials (moto with IAM)."""
    server = start_or_skip(lambda base: start_s3(base, auth=True), tmp_path_factory, "s3auth")
    yield server
    server.stop()


@pytest.fixture
def chromium(tmp_path_factory):
    """A headless Chromium (selenium WebDriver)."""
    driver = start_or_skip(lambda base: start_chromium(), tmp_path_factory, "chromium")
    yield driver
    driver.quit()


#: Where tests leave files for people to look at (the campaign page screenshot).
ARTIFACTS = Path(os.environ.get("DJDASK_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(params=["postgres", "mariadb"])
def server(request):
    """Each integration test that takes this fixture runs once per backend, unless
    :func:`on_one_backend` says otherwise."""
    return request.getfixturevalue(f"{request.param}_server")


def on_one_backend(backend: str):
    """Run a test on ``backend`` only.  For tests of what the campaign does on Dask's side
    (batching, streaming, workers retiring or dying, signals, cluster profiles, checks made
    before anything is written): the SQL their campaigns send is the SQL every campaign sends,
    and the tests of that SQL (jobs tables, reservations, transactions, fidelity to populate(),
    outages, records) still run on both backends.  Such tests alternate between the backends."""
    return pytest.mark.parametrize("server", [backend], indirect=True)


@pytest.fixture
def prefix():
    """A fresh schema-name prefix, so every test has its own pipeline copy."""
    return f"t{uuid.uuid4().hex[:10]}"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any DataJoint or djdask settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "DASK_DJDASK", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TEST_PIPELINES)])
    env["DASK_DJDASK__CAMPAIGN__DASHBOARD_ADDRESS"] = "127.0.0.1:0"
    # Headless campaigns (no Bokeh; the campaign's state.json and Dask's info pages stay): some
    # 0.5 s of CPU less per campaign.  Tests of the dashboard and its links turn it on (DASK_DASHBOARD).
    env["DASK_DJDASK__CAMPAIGN__DASK_DASHBOARD"] = "false"
    env.update(extra or {})
    return env


class Djdask:
    """Runs the real `djdask` command line in a subprocess against one server."""

    def __init__(self, server, prefix: str, cwd: Path) -> None:
        self.server = server
        self.prefix = prefix
        self.cwd = cwd

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            {
                **self.server.env,
                "DASK_DJDASK__DEMO__SCHEMA_PREFIX": self.prefix,
                "DJ_STORES": json.dumps(self.stores),
                **extra,
            }
        )

    @property
    def stores(self) -> dict:
        """A DataJoint default store in the test's directory, for <xarray@> arrays."""
        location = self.cwd / "store"
        location.mkdir(exist_ok=True)
        return {"default": "local", "local": {"protocol": "file", "location": str(location)}}

    def __call__(self, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "djdask.cli", *args],
            env=env or self.env(),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run Python code with the same environment (for DataJoint's own populate)."""
        return subprocess.run(
            [sys.executable, "-c", code],
            env=env or self.env(),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def djdask(server, prefix, tmp_path):
    return Djdask(server, prefix, tmp_path)


@pytest.fixture
def sql(server):
    client = server.client()
    yield client
    client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``DJDASK_TEST_CPU=<file>``, append each test's wall time and the CPU time of this
    process and of every process it started and reaped (campaigns, their workers, servers
    stopped by the test) to ``<file>``, one JSON line per test: where the suite's time goes."""
    out = os.environ.get("DJDASK_TEST_CPU")
    if not out:
        return (yield)
    import resource
    import time

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    wall, before = time.monotonic(), cpu()
    try:
        return (yield)
    finally:
        line = {"test": item.nodeid, "wall": round(time.monotonic() - wall, 2), "cpu": round(cpu() - before, 2)}
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


def pytest_terminal_summary(terminalreporter):
    """Say how many integration tests ran on each backend, so the report shows both."""
    per_backend: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "tests/integration" not in nodeid:
                continue
            for backend in ("postgres", "mariadb"):
                if f"[{backend}" in nodeid:
                    counts = per_backend.setdefault(backend, {})
                    counts[outcome] = counts.get(outcome, 0) + 1
    if per_backend:
        terminalreporter.section("integration tests per backend")
        for backend, counts in sorted(per_backend.items()):
            terminalreporter.write_line(f"{backend}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))


@pytest.fixture
def dj_instance(server):
    """A DataJoint Instance (own config and connection) on the test server, in this process."""
    inst = server.instance()
    yield inst
    inst.connection.close()
