"""Database outages caused for real: the server is killed in the middle of a campaign and
started again.  The campaign and its workers must wait it out and finish; at the end every
key has exactly one row, none is in error, none left reserved, and only a key whose make()
was cut off by the crash was called again (its transaction had rolled back).  An outage
longer than the tolerance stops the campaign with exit 2 and a message, and the next run
makes only what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import pytest

from tests.conftest import Djdask, start_or_skip
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger
from tests.services import start_mariadb, start_postgres

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "mariadb"])
def own_server(request, tmp_path_factory):
    """A server of this test's own: the test kills it."""
    starter = start_postgres if request.param == "postgres" else start_mariadb
    server = start_or_skip(starter, tmp_path_factory, f"own-{request.param}")
    yield server
    server.stop()


def campaign(djdask, env):
    return subprocess.Popen(
        [sys.executable, "-m", "djdask.cli", "populate", "ledger", "--workers", "2"],
        env=env,
        cwd=djdask.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Output:
    """A running process's standard streams, read as they come (so that its pipes never fill)."""

    def __init__(self, proc):
        self.proc, self.out, self.err = proc, [], []
        self.threads = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((proc.stdout, self.out), (proc.stderr, self.err))
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line)

    def page(self) -> str | None:
        found = [line.split(":", 1)[1].strip() for line in self.out if line.startswith("Campaign page:")]
        return found[0] if found else None

    def wait(self, timeout):
        self.proc.wait(timeout)
        for thread in self.threads:
            thread.join(10)
        return "".join(self.out), "".join(self.err)


def page_state(page: str) -> dict:
    with urllib.request.urlopen(f"{page}/state.json", timeout=5) as response:
        return json.load(response)


def wait_for_lines(ledger, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while len(ledger_lines(ledger)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the campaign made too few keys"
        time.sleep(0.1)


def check_exactly_once(server, prefix, ledger, n):
    sql = server.client()
    try:
        assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n
        assert sql.jobs_counts(f"{prefix}_ledger", "_entry") == {}  # no reserved, no error, no pending
    finally:
        sql.close()
    calls = Counter(int(line[0]) for line in ledger_lines(ledger))
    assert set(calls) == set(range(n))
    return calls


#: The jobs heartbeat and orphan check of the restart test (30 s and 60 s by default): its
#: long outage spans several of each, as a 90-s outage spans the defaults.
HEARTBEAT, ORPHAN_CHECK = "4s", "8s"


@pytest.mark.parametrize("seconds", [10, 30])
def test_campaign_rides_out_a_database_restart(own_server, prefix, tmp_path, seconds):
    """The server is killed with a third of the keys made and is back ``seconds`` later; the
    30-s outage outlasts seven heartbeats of the campaign's reservations and three of its
    orphan checks (each of which fails and is waited out, none frees a key it holds)."""
    djdask = Djdask(own_server, prefix, tmp_path)
    n = 240
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="0.05",
        PYTHONUNBUFFERED="1",
        DASK_DJDASK__JOBS__HEARTBEAT=HEARTBEAT,
        DASK_DJDASK__JOBS__ORPHAN_CHECK=ORPHAN_CHECK,
    )
    proc = campaign(djdask, env)
    output = Output(proc)
    wait_for_lines(ledger, n // 3, proc)
    made_before = len(ledger_lines(ledger))
    own_server.crash()
    killed = time.monotonic()
    notice = None
    while time.monotonic() < killed + seconds:
        if notice is None and output.page():
            notice = page_state(output.page()).get("notice")  # the campaign page says what it waits for
        time.sleep(0.5)
    assert proc.poll() is None, "the campaign died of the outage: " + "".join(output.err)[-3000:]
    own_server.restart()
    out, err = output.wait(timeout=240)
    back = time.monotonic()
    assert notice and "unreachable since" in notice, notice
    assert proc.returncode == 0, out + err
    assert err.count("unreachable since") == 1, err  # said once, not per statement
    assert "reachable again after" in err
    calls = check_exactly_once(own_server, prefix, ledger, n)
    # Only keys whose make() the crash cut off ran again: at most one per worker per outage.
    again = {k: c for k, c in calls.items() if c > 1}
    assert len(again) <= 4 and all(c == 2 for c in again.values()), again
    print(
        f"outage {seconds} s: {made_before} of {n} keys made before it; campaign finished "
        f"{back - killed - seconds:.1f} s after the restart; keys made twice: {sorted(again)}"
    )


def test_an_outage_past_the_tolerance_stops_the_campaign_and_the_next_run_finishes(own_server, prefix, tmp_path):
    """With outage-tolerance 5 s and a server that stays away, the campaign stops with exit
    2 and says what happened and what to do; after the restart a rerun makes the rest."""
    djdask = Djdask(own_server, prefix, tmp_path)
    n = 120
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="0.05",
        DASK_DJDASK__CAMPAIGN__OUTAGE_TOLERANCE="5s",
    )
    proc = campaign(djdask, env)
    wait_for_lines(ledger, n // 4, proc)
    own_server.crash()
    killed = time.monotonic()
    out, err = proc.communicate(timeout=120)
    stopped = time.monotonic() - killed
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err, err
    said = " ".join(err.split())
    assert "has been unreachable since" in said and "outage-tolerance" in said and "run the same command again" in said
    assert own_server.env.get("DJ_PASS", "") == "" or own_server.env["DJ_PASS"] not in out + err
    assert stopped < 60, stopped
    own_server.restart()
    rerun = djdask("populate", "ledger", "--workers", "2", env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    calls = check_exactly_once(own_server, prefix, ledger, n)
    again = {k: c for k, c in calls.items() if c > 1}
    assert len(again) <= 4, again
