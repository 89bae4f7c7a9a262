"""Campaign records on real servers: every campaign registers itself in ``~djdask_campaign``,
its reservations carry its id, ``djdask campaigns`` lists it, ``djdask report`` gives its
accounting (which agrees with the jobs tables), and a campaign killed outright is shown
``lost`` (and notified once).  ``djdask cancel`` from another process, and every command while
a campaign runs, in other time zones than UTC: ``test_campaign_times.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter

import pytest

from tests.integration.test_campaign_times import parallel
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger, wait_for
from tests.integration.test_notify import Hooks

pytestmark = pytest.mark.integration


def campaigns(djdask, env) -> list[dict]:
    listed = djdask("campaigns", "ledger", "--json", env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return json.loads(listed.stdout)


def test_a_campaign_is_recorded_traced_and_reported(djdask, sql, prefix, tmp_path):
    n = 30
    seed_ledger(djdask, n)
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(tmp_path / "l.txt"), DJDASK_TEST_MAKE_SECONDS="0.05", DJ_JOBS_KEEP_COMPLETED="true"
    )
    result = djdask("populate", "ledger", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    campaign = re.search(r"Campaign:\s+([0-9a-f]{8}) ", result.stdout).group(1)

    listed, report, text = parallel(
        djdask, env, ["campaigns", "ledger", "--json"], ["report", campaign[:4], "--json"], ["report", campaign]
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [record] = json.loads(listed.stdout)
    assert record["campaign"] == campaign and record["module"] == "ledger"
    assert record["state"] == "finished" and record["exit_code"] == 0
    assert record["keys_made"] == n and record["errors"] == 0 and record["controllers"] == 1
    assert record["pid"] > 0 and record["host"] and record["user"] and record["ended"] >= record["started"]
    assert record["djdask_version"] and record["datajoint_version"]
    assert record["clusters"] == {"default": "local"} and record["dashboard"].startswith("http")
    [entry] = record["accounting"]["tables"]
    assert entry["table"] == "Entry"
    assert entry["made"] == n and entry["errors"] == 0
    timing = entry["make_seconds"]
    assert timing["count"] == n and 0.05 <= timing["min"] <= timing["p50"] <= timing["p95"] <= timing["max"]
    assert entry["busy_seconds"] >= n * 0.05 and entry["peak_memory"] > 20 * 2**20
    [pool] = record["accounting"]["pools"]
    assert pool["pool"] == "default" and pool["profile"] == "local"
    assert pool["worker_seconds"] > 0 and pool["busy_seconds"] >= n * 0.05
    assert pool["idle_seconds"] == pytest.approx(max(0.0, pool["worker_seconds"] - pool["busy_seconds"]), abs=0.01)

    # Each reservation names the campaign's process, as DataJoint's own do; DataJoint's `version`
    # stays its own (the code version), so the success rows kept trace back to this record.
    owners = sql.query(
        f"SELECT host, pid, version, COUNT(*) FROM {sql.table(prefix + '_ledger', '~~entry')} GROUP BY host, pid, version"
    )
    assert [tuple(o[:2]) + (o[3],) for o in owners] == [(record["host"], record["pid"], n)]
    assert "djdask" not in owners[0][2]
    [owner] = record["owners"]
    assert set(owner) == {"host", "pid", "started", "session_utc_offset"}
    assert (owner["host"], owner["pid"]) == (record["host"], record["pid"])

    assert report.returncode == 0, report.stdout + report.stderr
    figures = json.loads(report.stdout)
    assert figures["jobs_tables"] == {"Entry": {"success": n}}
    assert text.returncode == 0 and f"Campaign {campaign} of ledger: finished" in text.stdout
    assert re.search(rf"Entry\s+{n}\s+0\s+0\s", text.stdout), text.stdout
    assert "success 30" in text.stdout


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_a_submitted_controller_outlives_the_command_and_when_killed_is_lost_and_released(
    djdask, sql, prefix, tmp_path
):
    """`djdask submit` on local: the command returns at once, its controller (a process of its
    own session) goes on making keys; SIGKILL it and its record becomes `lost`, told once to
    the webhook; the next campaign frees its keys and finishes."""
    n = 40
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    hooks = Hooks()
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="1",  # 20 s of work: still running when a loaded machine gets to kill it
        DASK_DJDASK__CAMPAIGN__HEARTBEAT="1s",
        DASK_DJDASK__CAMPAIGN__SUBMIT_DIR=str(tmp_path / "campaigns"),
        DASK_DJDASK__CAMPAIGN__NOTIFY=json.dumps({"webhooks": [f"{hooks.url}/hook"]}),
    )
    schema = prefix + "_ledger"
    start = time.monotonic()
    submitted = djdask("submit", "ledger", "--workers", "2", env=env)
    took = time.monotonic() - start
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert took < 10, f"djdask submit took {took:.1f} s"  # 1.7 s alone; the suite loads the machine
    print(f"submit (local): returned in {took:.1f} s")
    found = re.search(r"Campaign ([0-9a-f]{8}) submitted: controller pid (\d+)\.", submitted.stdout)
    assert found, submitted.stdout
    campaign, pid = found.group(1), int(found.group(2))
    try:
        wait_for(lambda: sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__entry')}") >= 4, 120, "keys made")
        [record] = campaigns(djdask, env)
        assert record["campaign"] == campaign and record["state"] == "running" and record["pid"] == pid
        log = (tmp_path / "campaigns" / f"{campaign}.log").read_text()
        assert f"Campaign:       {campaign}" in log
    finally:
        os.killpg(pid, signal.SIGKILL)  # the controller and its workers, as a node failure would
    killed = time.monotonic()
    wait_for(lambda: campaigns(djdask, env)[0]["state"] == "lost", 30, "the record to become lost")
    print(f"lost: the record read lost {time.monotonic() - killed:.1f} s after the SIGKILL")
    [lost] = [b for b in hooks.bodies if b["campaign"]["state"] == "lost"]
    assert lost["campaign"]["id"] == campaign and "stopped beating" in lost["text"]
    assert sql.jobs_counts(schema, "__entry").get("reserved", 0) > 0, "the kill left nothing to recover"

    again = djdask("populate", "ledger", "--workers", "2", env={**env, "DJDASK_TEST_MAKE_SECONDS": "0.05"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "orphaned reservations" in again.stderr
    assert sql.jobs_counts(schema, "__entry") == {}
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__entry')}") == n
    keys = Counter(int(k) for k, *_ in ledger_lines(ledger))
    assert set(keys) == set(range(n)) and max(keys.values()) <= 2
    assert [r["state"] for r in campaigns(djdask, env)] == ["finished", "lost"]  # a record each, newest first
    # One message per end: the lost one (once, though judged again) and the finished one.
    assert sorted(b["campaign"]["state"] for b in hooks.bodies) == ["finished", "lost"]
    hooks.close()
