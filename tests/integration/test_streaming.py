"""The streaming campaign: order, batching, memory, retries, cancellation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.conftest import on_one_backend
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger, start_campaign, wait_for

pytestmark = pytest.mark.integration


def summary_of(djdask, tmp_path, *args, env=None, name="summary.json"):
    path = tmp_path / name
    result = djdask("populate", *args, "--json-summary", str(path), env=env)
    return result, (json.loads(path.read_text()) if path.exists() else None)


@on_one_backend("postgres")
def test_results_stream_down_the_dag(djdask, sql, prefix, tmp_path):
    """The first CellStats row must be completed before the last ScanMovie row: tables do not
    wait for their parent tables to finish. Checked from the jobs tables' completion times."""
    assert djdask.python("from djdask.pipeline.demo import insert_demo_data; insert_demo_data('small')").returncode == 0
    env = djdask.env(DJ_JOBS_KEEP_COMPLETED="true")
    result = djdask("populate", "djdask.pipeline", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    img, acq = f"{prefix}_imaging", f"{prefix}_acquisition"
    first_stats = sql.scalar(
        f"SELECT MIN(completed_time) FROM {sql.table(img, '~~cell_stats')} WHERE status = 'success'"
    )
    last_movie = sql.scalar(
        f"SELECT MAX(completed_time) FROM {sql.table(acq, '~~scan_movie')} WHERE status = 'success'"
    )
    assert first_stats is not None and last_movie is not None
    assert first_stats < last_movie, (first_stats, last_movie)
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(img, '__cell_stats')}") == 16


@on_one_backend("mariadb")
def test_fast_makes_are_batched(djdask, sql, tmp_path):
    """5,000 keys with a 1 ms make() must travel in far fewer Dask tasks than keys; a
    campaign of one task per key would drown the scheduler."""
    n = 5_000
    assert djdask.python("import ledger").returncode == 0  # declares the tables
    sql.fill_integers(f"{djdask.prefix}_ledger", "source", "source_id", n)
    env = djdask.env(DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"), DJDASK_TEST_MAKE_SECONDS="0.001")
    result, summary = summary_of(djdask, tmp_path, "ledger", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    table = summary["tables"][0]
    assert table["succeeded"] == n
    assert table["tasks"] < n / 20, table
    assert table["largest_batch"] >= 100, table


@on_one_backend("postgres")
def test_slow_makes_go_one_or_two_per_task(djdask, tmp_path):
    """A 1 s make() must get batches of one or two keys (target task duration 2 s)."""
    seed_ledger(djdask, 6)
    env = djdask.env(DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"), DJDASK_TEST_MAKE_SECONDS="1")
    result, summary = summary_of(djdask, tmp_path, "ledger", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    table = summary["tables"][0]
    assert table["succeeded"] == 6 and table["largest_batch"] <= 2, table


@on_one_backend("mariadb")
def test_memory_does_not_grow_with_pending_keys(djdask, sql, prefix, tmp_path):
    """The campaign holds only what is in flight: its traced peak memory with 200,000 keys
    pending must stay within a few MB of the same campaign with 2,000 pending."""
    peaks = {}
    for n in (2_000, 200_000):
        run_prefix = f"{prefix}m{n}"
        env = djdask.env(
            DASK_DJDASK__DEMO__SCHEMA_PREFIX=run_prefix,
            DJDASK_TEST_LEDGER=str(tmp_path / f"l{n}"),
            DASK_DJDASK__CAMPAIGN__TRACE_MEMORY="true",
        )
        seed = subprocess.run(
            [sys.executable, "-c", "import ledger"],  # declares the tables
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert seed.returncode == 0, seed.stderr
        sql.fill_integers(f"{run_prefix}_ledger", "source", "source_id", n)
        result, summary = summary_of(
            djdask, tmp_path, "ledger", "--workers", "1", "--max-calls", "100", env=env, name=f"s{n}.json"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary["tables"][0]["succeeded"] == 100
        peaks[n] = summary["traced_peak_bytes"]
    assert peaks[200_000] - peaks[2_000] < 5 * 2**20, peaks


@on_one_backend("postgres")
def test_transient_failures_are_retried_user_errors_are_not(djdask, sql, prefix, tmp_path):
    """A ConnectionError on the first attempt ends as success, with the retry in the log; a
    ValueError ends as one error row after one attempt."""
    assert djdask.python("import flaky; flaky.Thing.insert({'thing_id': i} for i in range(4))").returncode == 0
    ledger = tmp_path / "broken.txt"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MARKER_DIR=str(markers), DASK_DJDASK__CAMPAIGN__RETRY_BACKOFF="0.2s"
    )
    result, summary = summary_of(djdask, tmp_path, "flaky", "--workers", "2", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    tables = {t["table"]: t for t in summary["tables"]}
    assert (tables["Flaky"]["succeeded"], tables["Flaky"]["errors"], tables["Flaky"]["retries"]) == (4, 0, 4)
    assert "ConnectionError" in result.stderr and "retry 2/3" in result.stderr
    assert (tables["Broken"]["succeeded"], tables["Broken"]["errors"], tables["Broken"]["retries"]) == (0, 4, 0)
    assert sorted(ledger.read_text().split()) == ["0", "1", "2", "3"]  # one call per key
    schema = f"{prefix}_flaky"
    assert sql.jobs_counts(schema, "__broken") == {"error": 4}
    assert sql.jobs_counts(schema, "__flaky") == {}


@on_one_backend("mariadb")
def test_sigint_stops_gracefully_and_the_next_run_resumes(djdask, sql, prefix, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it, workers included):
    the campaign exits within the grace period, leaves no key reserved, and a second run
    completes the rest without making any finished key again."""
    n = 30
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MAKE_SECONDS="0.5", DASK_DJDASK__CAMPAIGN__GRACE_PERIOD="10s"
    )
    proc = start_campaign(env, tmp_path, new_session=True)
    schema = prefix + "_ledger"
    target = sql.table(schema, "__entry")
    wait_for(lambda: sql.scalar(f"SELECT COUNT(*) FROM {target}") >= 3, 120, "progress")
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10 + 10  # the grace period, and shutting the cluster down
    assert proc.returncode == 130, out + err
    assert "stopped" in out and "released" in err
    first = sql.scalar(f"SELECT COUNT(*) FROM {target}")
    assert first < n
    assert sql.jobs_counts(schema, "__entry").get("reserved", 0) == 0

    again = djdask("populate", "ledger", "--workers", "2", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sql.scalar(f"SELECT COUNT(*) FROM {target}") == n
    counts = Counter(k for k, *_ in ledger_lines(ledger))
    assert len(counts) == n and max(counts.values()) == 1, counts
