"""Campaign steps the other tests do not reach: attempts used up, a jobs table created by
two processes at once, the lease timeout, a worker retiring on a LocalCluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.conftest import on_one_backend
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger

pytestmark = pytest.mark.integration


@on_one_backend("mariadb")
def test_transient_failures_use_up_max_attempts_then_become_error_rows(djdask, sql, prefix, tmp_path):
    """A make() that always loses its connection is tried max-attempts times, then its key is
    an error row saying so; more calls would loop forever, fewer would give up on a blip."""
    assert (
        djdask.python("import unreliable; unreliable.Sample.insert({'sample_id': i} for i in range(3))").returncode == 0
    )
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS="2",
        DASK_DJDASK__CAMPAIGN__RETRY_BACKOFF="100ms",
    )
    result = djdask("populate", "unreliable", "--workers", "1", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert Counter(ledger.read_text().split()) == {"0": 2, "1": 2, "2": 2}
    assert sql.jobs_counts(f"{prefix}_unreliable", "__upload") == {"error": 3}
    messages = [r[0] for r in sql.query(f"SELECT error_message FROM {sql.table(prefix + '_unreliable', '~~upload')}")]
    # What DataJoint's populate() writes for the error, and nothing else: the attempts are in the stack.
    assert all(m.startswith("ConnectionResetError: ") and "archive reset" in m for m in messages), messages
    assert not any("attempts" in m for m in messages), messages


def test_two_processes_create_the_same_jobs_table_at_once(djdask, sql, prefix, tmp_path):
    """Two campaigns starting together both declare the missing jobs table; neither may fail
    with "already exists", and the table must be there once, usable by both."""
    seed_ledger(djdask, 5)
    start = time.time() + 3
    code = (
        "import time, ledger\n"
        "from djdask.jobs import JobQueue\n"
        "ledger.Entry.key_source  # imported and connected before the start\n"
        f"time.sleep(max(0, {start} - time.time()))\n"
        "print(JobQueue(ledger.Entry()).enqueue())\n"
    )
    env = djdask.env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert sorted(int(out.strip().splitlines()[-1]) for out, _ in outputs)[-1] <= 5
    assert sum(int(out.strip().splitlines()[-1]) for out, _ in outputs) == 5  # each key enqueued once
    assert sql.jobs_counts(f"{prefix}_ledger", "_entry") == {"pending": 5}


def own_session_id(sql) -> int:
    return int(sql.scalar("SELECT pg_backend_pid()" if sql.backend == "postgresql" else "SELECT CONNECTION_ID()"))


def test_lease_timeout_frees_reservations_that_are_not_renewed(djdask, sql, prefix):
    """A reservation whose session is alive but whose lease has not been renewed for longer
    than djdask.jobs.lease-timeout is an orphan (a hung owner); without the setting it is
    left alone, since DataJoint's own workers never renew theirs."""
    seed_ledger(djdask, 2)
    assert djdask.python("import ledger; ledger.Entry.jobs.refresh()").returncode == 0
    jobs = sql.table(f"{prefix}_ledger", "~~entry")
    user = djdask.server.env["DJ_USER"]
    user_column = '"user"' if sql.backend == "postgresql" else "`user`"
    # Reserved now, by this test's own (live) session, and never renewed.
    sql.query(
        f"UPDATE {jobs} SET status = 'reserved', reserved_time = CURRENT_TIMESTAMP(3), host = 'elsewhere', "
        f"pid = 4242, connection_id = %s, {user_column} = %s",
        (own_session_id(sql), user),
    )
    time.sleep(3)
    kept = djdask("release", "ledger")
    assert kept.returncode == 0, kept.stderr
    assert "0 orphaned reservation(s) freed" in kept.stdout  # its session (ours) is alive
    assert sql.jobs_counts(f"{prefix}_ledger", "_entry") == {"reserved": 2}
    freed = djdask("release", "ledger", env=djdask.env(DASK_DJDASK__JOBS__LEASE_TIMEOUT="2s"))
    assert freed.returncode == 0, freed.stderr
    assert "2 orphaned reservation(s) freed" in freed.stdout
    assert sql.jobs_counts(f"{prefix}_ledger", "_entry") == {"pending": 2}


RETIRING_RUN = """
import json, logging, os, threading, time
logging.basicConfig(level=logging.INFO)
from distributed import Client, LocalCluster
from djdask import Campaign

# One worker without a lifetime; once the campaign makes keys, a second one joins with a
# lifetime of 12 s (counted from its own start, as a batch job's): it retires mid-campaign, and
# has made keys before, even when a loaded machine takes 8 s to start it (seen in the suite).
cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
client = Client(cluster)
campaign, out = Campaign("ledger", client=client, target_duration="2s"), {}
runner = threading.Thread(target=lambda: out.update(summary=campaign.run()))
runner.start()
ledger = os.environ["DJDASK_TEST_LEDGER"]
while runner.is_alive() and not (os.path.exists(ledger) and open(ledger).read().strip()):
    time.sleep(0.05)
os.environ["DJDASK_WORKER_LIFETIME"] = "12"
os.environ["DJDASK_WORKER_LIFETIME_STAGGER"] = "0"
cluster.scale(2)
client.wait_for_workers(2)
del os.environ["DJDASK_WORKER_LIFETIME"]
runner.join()
print(json.dumps({**out["summary"].as_dict(), "workers_left": len(client.scheduler_info()["workers"])}))
client.close(); cluster.close()
"""


@on_one_backend("postgres")
def test_a_retiring_local_worker_hands_its_queued_keys_to_another(djdask, sql, prefix, tmp_path):
    """A worker past its lifetime (as batch jobs near their walltime) starts no new make():
    the rest of its batch goes back to the campaign (requeue) and another worker makes it;
    every key once, none lost, none left reserved, no attempt charged."""
    n = 140  # 35 s of make() for one worker: the campaign outlasts the second one's lifetime
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MAKE_SECONDS="0.25")
    result = djdask.python(RETIRING_RUN, env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0 and summary["tables"][0]["retries"] == 0
    assert summary["workers_left"] == 1  # the one with a lifetime retired
    keys = Counter(line[0] for line in ledger_lines(ledger))
    assert len(keys) == n and set(keys.values()) == {1}
    assert len({line[1] for line in ledger_lines(ledger)}) == 2  # both workers made keys
    assert sql.jobs_counts(f"{prefix}_ledger", "_entry") == {}
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n
    assert "requeued" in result.stderr  # the path under test ran
