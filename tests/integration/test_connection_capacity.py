"""A campaign fits its workers into the connections its database server has free.

On a MariaDB of the test's own, whose max_connections the test lowers: more
workers than fit are capped (said once, before anything is written), the campaign
never holds more connections than the server takes, and every key is made; when
not one worker fits, exit 2 with the fix, nothing written.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from djdask.db.capacity import OWN_CONNECTIONS
from tests.conftest import Djdask, start_or_skip
from tests.integration.test_jobs_engine import seed_ledger
from tests.services import start_mariadb

pytestmark = pytest.mark.integration


@pytest.fixture
def small_server(tmp_path_factory):
    """A MariaDB of this test's own, whose connection limit it sets."""
    server = start_or_skip(start_mariadb, tmp_path_factory, "small-mariadb")
    yield server
    server.stop()


def test_workers_are_capped_to_the_connections_the_server_has_free(small_server, prefix, tmp_path):
    djdask = Djdask(small_server, prefix, tmp_path)
    n = 40
    seed_ledger(djdask, n)
    admin = small_server.client()
    others = [small_server.client() for _ in range(2)]  # sessions of somebody else, idle
    limit = 12
    admin.query(f"SET GLOBAL max_connections = {limit}")
    in_use = int(admin.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1])
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], int(admin.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1]))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    env = djdask.env(DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"), DJDASK_TEST_MAKE_SECONDS="0.2")
    result = subprocess.run(
        [sys.executable, "-m", "djdask.cli", "populate", "ledger", "--workers", "12"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    done.set()
    watcher.join()
    assert result.returncode == 0, result.stdout + result.stderr
    # Free for the campaign: the limit less the sessions open before it (its own first one is among
    # the limit); less its own connections, for workers.
    workers = limit - in_use - OWN_CONNECTIONS
    said = " ".join(result.stderr.split())
    assert f"default 12 -> {workers}" in said, said
    assert f"takes {limit} connections" in said and "SET GLOBAL max_connections = 24" in said
    assert said.count("capped") == 1 and "Traceback" not in said
    assert peak[0] <= limit, f"{peak[0]} connections at the peak, the server takes {limit}"
    assert admin.scalar(f"SELECT COUNT(*) FROM {admin.table(prefix + '_ledger', '__entry')}") == n
    assert admin.jobs_counts(f"{prefix}_ledger", "__entry") == {}  # no errors: no worker was refused
    print(f"capped to {workers} workers of 12; {peak[0]} connections at the peak (limit {limit}, {in_use} before)")

    # Not one worker fits: exit 2 with the fix, before anything is written.  MariaDB takes at
    # least 10 connections: somebody else holds 8 (the campaign's first is the 9th).
    others += [small_server.client() for _ in range(10 - OWN_CONNECTIONS - len(others))]
    admin.query("SET GLOBAL max_connections = 10")
    refused = subprocess.run(
        [sys.executable, "-m", "djdask.cli", "populate", "ledger", "--workers", "2"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())  # as printed, wrapped
    assert "takes 10 connections (9 in use)" in said and "not even one worker per pool fits" in said, said
    assert "SET GLOBAL max_connections = 20" in said and "Nothing was started" in said and "Traceback" not in said
    admin.query(f"SET GLOBAL max_connections = {limit}")
    records = admin.scalar(f"SELECT COUNT(*) FROM {admin.table(prefix + '_ledger', '~djdask_campaign')}")
    assert records == 1, "the refused campaign was recorded: something was written"
    for client in (*others, admin):
        client.close()
