"""The jobs engine against real servers: exactly once beside DataJoint, kills, leases."""

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

pytestmark = pytest.mark.integration


def ledger_lines(path):
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines()]


def seed_ledger(djdask, n):
    result = djdask.python(f"import ledger; ledger.Source.insert([{{'source_id': i}} for i in range({n})])")
    assert result.returncode == 0, result.stderr


def start_campaign(env, cwd, *, new_session=False):
    """`djdask populate ledger` in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "djdask.cli", "populate", "ledger", "--workers", "2"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def wait_for(predicate, timeout, what, poll=0.2):
    """Wait for ``predicate``, asking every ``poll`` s; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_exactly_once_beside_datajoint_workers(djdask, sql, prefix, tmp_path):
    """Two djdask campaigns and two DataJoint populate(reserve_jobs=True) processes on one
    table of 2,000 keys: the ledger must have exactly 2,000 lines, one per key. A duplicate
    line means two workers ran the same make(); a missing one, a lost key."""
    n = 2000
    seed_ledger(djdask, n)
    # DataJoint's own populate() fails when two processes create a jobs table at the
    # same moment; this test is about reservations, so the table exists beforehand.
    assert djdask.python("import ledger; ledger.Entry.jobs").returncode == 0
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MAKE_SECONDS="0.01")
    cmd_djdask = [sys.executable, "-m", "djdask.cli", "populate", "ledger", "--workers", "2"]
    cmd_dj = [sys.executable, "-c", "import ledger; ledger.Entry.populate(reserve_jobs=True)"]
    procs = [
        subprocess.Popen(c, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in (cmd_djdask, cmd_dj, cmd_djdask, cmd_dj)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err

    lines = ledger_lines(ledger)
    keys = Counter(int(k) for k, *_ in lines)
    assert len(lines) == n, f"{len(lines) - len(keys)} duplicate make() calls"
    assert set(keys) == set(range(n))
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n
    assert sql.jobs_counts(prefix + "_ledger", "__entry").get("reserved", 0) == 0
    # Both kinds of worker took part: DataJoint's processes made keys themselves.
    dj_pids = {str(procs[1].pid), str(procs[3].pid)}
    by_datajoint = sum(1 for _, pid, *_ in lines if pid in dj_pids)
    assert 0 < by_datajoint < n


def test_worker_killed_mid_make_leaves_no_partial_rows(djdask, sql, prefix, tmp_path):
    """SIGKILL in the middle of a make() that inserted a master row and parts: the transaction
    dies with the worker, the campaign finishes the key, and every master has all its parts."""
    assert (
        djdask.python("import parts; parts.Recording.insert([{'recording_id': i} for i in range(6)])").returncode == 0
    )
    marker = tmp_path / "killed"
    env = djdask.env(DJDASK_TEST_MARKER=str(marker), DJDASK_TEST_KILL_KEY="2")
    result = djdask("populate", "parts", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists(), "the make() never killed its worker: the test proved nothing"
    schema = prefix + "_parts"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__analysis')}") == 6
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__analysis__piece')}") == 18
    orphans = sql.scalar(
        f"SELECT COUNT(*) FROM {sql.table(schema, '__analysis')} a WHERE (SELECT COUNT(*) FROM "
        f"{sql.table(schema, '__analysis__piece')} p WHERE p.recording_id = a.recording_id) <> 3"
    )
    assert orphans == 0
    assert sql.jobs_counts(schema, "__analysis") == {}


@on_one_backend("mariadb")
def test_killed_campaign_is_recovered_by_the_next_one(djdask, sql, prefix, tmp_path):
    """SIGKILL to a whole campaign leaves reserved rows; the next campaign must free them at
    start (their sessions are gone; no timeout is configured) and finish every key."""
    n = 40
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MAKE_SECONDS="0.3")
    proc = start_campaign(env, tmp_path, new_session=True)
    schema = prefix + "_ledger"
    target = sql.table(schema, "__entry")
    try:
        wait_for(
            lambda: (
                sql.scalar(f"SELECT COUNT(*) FROM {target}") >= 4
                and sql.jobs_counts(schema, "__entry").get("reserved", 0) > 0
            ),
            120,
            "a campaign in flight",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    time.sleep(1)
    assert sql.jobs_counts(schema, "__entry").get("reserved", 0) > 0, "the kill left nothing to recover"

    start = time.monotonic()
    again = djdask("populate", "ledger", "--workers", "2", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "orphaned reservations" in again.stderr
    assert sql.scalar(f"SELECT COUNT(*) FROM {target}") == n
    assert sql.jobs_counts(schema, "__entry") == {}
    # Every key was made; the ones in flight at the kill were made again, once.
    keys = Counter(int(k) for k, *_ in ledger_lines(ledger))
    assert set(keys) == set(range(n)) and max(keys.values()) <= 2
    assert time.monotonic() - start < 120


@on_one_backend("postgres")
def test_live_long_make_survives_datajoint_orphan_timeout(djdask, sql, prefix, tmp_path):
    """A make() longer than the orphan_timeout given to DataJoint's own jobs.refresh() must not
    be taken from a live campaign: the heartbeat keeps its reserved_time fresh."""
    seed_ledger(djdask, 2)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MAKE_SECONDS="6", DASK_DJDASK__JOBS__HEARTBEAT="0.5s")
    proc = start_campaign(env, tmp_path)
    schema = prefix + "_ledger"
    wait_for(lambda: sql.jobs_counts(schema, "__entry").get("reserved", 0) == 2, 120, "both keys reserved")
    refresher = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, time, ledger\n"
            "out = []\n"
            "for _ in range(6):\n"
            "    out.append(ledger.Entry.jobs.refresh(orphan_timeout=2)['orphaned']); time.sleep(0.5)\n"
            "print(json.dumps(out))",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out, err = proc.communicate(timeout=300)
    assert refresher.returncode == 0, refresher.stderr
    assert json.loads(refresher.stdout.strip().splitlines()[-1]) == [0] * 6
    assert proc.returncode == 0, out + err
    assert len(ledger_lines(ledger)) == 2  # each make() ran once


@on_one_backend("mariadb")
def test_sigterm_releases_held_keys(djdask, sql, prefix, tmp_path):
    """SIGTERM (scancel, kill) to a running campaign: it exits, no key is left reserved, no
    partial work is committed, and the next run finishes the rest."""
    n = 30
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(DJDASK_TEST_LEDGER=str(ledger), DJDASK_TEST_MAKE_SECONDS="0.4")
    proc = start_campaign(env, tmp_path)
    schema = prefix + "_ledger"
    target = sql.table(schema, "__entry")
    wait_for(lambda: sql.scalar(f"SELECT COUNT(*) FROM {target}") >= 3, 120, "progress")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "released" in err
    done = sql.scalar(f"SELECT COUNT(*) FROM {target}")
    assert done < n
    assert sql.jobs_counts(schema, "__entry").get("reserved", 0) == 0
    again = djdask("populate", "ledger", "--workers", "2", env=env)
    assert again.returncode == 0, again.stderr
    assert sql.scalar(f"SELECT COUNT(*) FROM {target}") == n
