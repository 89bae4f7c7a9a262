"""Campaigns on cluster profiles that can run here: local, and a running scheduler."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import on_one_backend

pytestmark = pytest.mark.integration

SCHEDULER = """
import sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0")
open(sys.argv[1], "w").write(cluster.scheduler_address)
time.sleep(600)
"""


@on_one_backend("mariadb")
def test_populate_on_a_running_scheduler(djdask, sql, prefix, tmp_path):
    """`--cluster` with an `address` profile: the campaign runs on workers it did not start,
    and leaves them running."""
    assert djdask.python("import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2, 4, 5))").returncode == 0
    address_file = tmp_path / "address"
    scheduler = subprocess.Popen([sys.executable, "-c", SCHEDULER, str(address_file)], env=djdask.env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() or not address_file.read_text():
            assert time.monotonic() < deadline and scheduler.poll() is None, "scheduler did not start"
            time.sleep(0.2)
        env = djdask.env(
            DASK_DJDASK__CLUSTERS__HERE__KIND="address", DASK_DJDASK__CLUSTERS__HERE__ADDRESS=address_file.read_text()
        )
        result = djdask("populate", "badkey", "--cluster", "here", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_badkey', '__square')}") == 4
        assert scheduler.poll() is None  # still running: not djdask's to stop
    finally:
        scheduler.kill()
        scheduler.wait()


@on_one_backend("postgres")
def test_populate_on_the_local_profile(djdask, sql, prefix):
    assert djdask.python("import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2))").returncode == 0
    result = djdask("populate", "badkey", "--cluster", "local", "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_badkey', '__square')}") == 2


@on_one_backend("mariadb")
def test_unreachable_scheduler_is_a_clear_error(djdask, sql, prefix):
    """An `address` profile whose scheduler is not there: exit 2 within the connect timeout,
    naming the profile key; no key left reserved."""
    import socket

    assert djdask.python("import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2))").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    env = djdask.env(
        DASK_DJDASK__CLUSTERS__GONE__KIND="address",
        DASK_DJDASK__CLUSTERS__GONE__ADDRESS=f"tcp://127.0.0.1:{port}",
        DASK_DJDASK__CLUSTERS__GONE__CONNECT_TIMEOUT="3s",
    )
    start = time.monotonic()
    result = djdask("populate", "badkey", "--cluster", "gone", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - start < 60
    assert "cannot reach the scheduler at tcp://127.0.0.1" in result.stderr
    assert "djdask.clusters.gone.address" in result.stderr and "Traceback" not in result.stderr
    assert sql.jobs_counts(f"{prefix}_badkey", "__square").get("reserved", 0) == 0
