"""Group commit (``djdask.campaign.group-commit``), with its faults caused for real.

Each row of ``grouped.Entry`` names the make() call that committed it, and the ledger
lists every call: a key made again after its commit would show a call after the
committing one; a group rolled back shows as calls that committed nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from tests.conftest import on_one_backend

pytestmark = pytest.mark.integration

N = 300


def seed(djdask, n: int = N) -> None:
    result = djdask.python(f"import grouped; grouped.Source.insert([{{'source_id': i}} for i in range({n})])")
    assert result.returncode == 0, result.stderr


def grouped_env(djdask, ledger, **extra: str) -> dict[str, str]:
    return djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DASK_DJDASK__CAMPAIGN__GROUP_COMMIT='["Entry"]',
        DASK_DJDASK__CAMPAIGN__GROUP_COMMIT_KEYS="20",
        **extra,
    )


def calls_by_key(ledger) -> dict[int, list[tuple[str, float]]]:
    """Each key's make() calls, in the order they ran: (call, time)."""
    calls: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for line in ledger.read_text().splitlines():
        key, call, when = line.split()
        calls[int(key)].append((call, float(when)))
    return {k: sorted(v, key=lambda c: c[1]) for k, v in calls.items()}


def committed(sql, prefix) -> dict[int, str]:
    table = sql.table(f"{prefix}_grouped", "__entry")
    rows = sql.query(f"SELECT source_id, made_by, value FROM {table}")
    assert all(value == key * 3 for key, _, value in rows)
    return {int(key): call for key, call, _ in rows}


def jobs(sql, prefix) -> dict[str, int]:
    return sql.jobs_counts(f"{prefix}_grouped", "_entry")


def error_rows(sql, prefix) -> dict[int, str]:
    table = sql.table(f"{prefix}_grouped", "~~entry")
    return {int(k): m for k, m in sql.query(f"SELECT source_id, error_message FROM {table} WHERE status = 'error'")}


def assert_committed_last(calls, rows) -> None:
    """Every row's call is its key's last make() call: nothing made again after a commit."""
    for key, call in rows.items():
        assert calls[key][-1][0] == call, f"key {key}: row from {call}, calls {calls[key]}"


def test_group_commit_is_exactly_once_beside_datajoint_workers(djdask, sql, prefix, tmp_path):
    """A group-commit campaign and DataJoint's own populate(reserve_jobs=True) in another
    process share one table: every key is made once, by one of them, nothing is left reserved."""
    seed(djdask)
    ledger = tmp_path / "ledger.txt"
    # 0.05 s a key: DataJoint's process alone takes some 15 s, long enough for a campaign that
    # starts late on a loaded machine to join it (at 0.01 s it was done first, once in a full run).
    env = grouped_env(djdask, ledger, DJDASK_TEST_MAKE_SECONDS="0.05")
    theirs = subprocess.Popen(
        [sys.executable, "-c", "import grouped; grouped.Entry.populate(reserve_jobs=True)"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ours = djdask("populate", "grouped", "--target", "Entry", "--workers", "2", "--json-summary", "s.json", env=env)
    finally:
        out, _ = theirs.communicate(timeout=120)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert theirs.returncode == 0, out
    calls, rows = calls_by_key(ledger), committed(sql, prefix)
    assert sorted(rows) == list(range(N))
    assert {k: len(c) for k, c in calls.items() if len(c) != 1} == {}, "a key was made twice"
    assert_committed_last(calls, rows)
    theirs_pid = str(theirs.pid)
    by_datajoint = sum(call.split("-")[0] == theirs_pid for call in rows.values())
    assert 0 < by_datajoint < N, f"DataJoint's process made {by_datajoint} of {N} keys: they did not run side by side"
    assert jobs(sql, prefix).get("reserved", 0) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    (entry,) = [t for t in summary["tables"] if t["table"] == "Entry"]
    assert entry["group_commit"] and entry["succeeded"] == N - by_datajoint
    print(f"group commit beside DataJoint: djdask made {N - by_datajoint}, DataJoint {by_datajoint}")


def test_a_failing_make_rolls_back_its_group_and_only_the_culprit_is_an_error(djdask, sql, prefix, tmp_path):
    """Keys 13 and 77 raise inside their groups: each group rolls back, its keys run again
    one per transaction, and only the two culprits become error rows, with their message."""
    seed(djdask)
    ledger = tmp_path / "ledger.txt"
    env = grouped_env(djdask, ledger, DJDASK_TEST_FAULTS="13=raise,77=raise")
    result = djdask("populate", "grouped", "--target", "Entry", "--workers", "2", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    calls, rows = calls_by_key(ledger), committed(sql, prefix)
    assert sorted(rows) == sorted(set(range(N)) - {13, 77})
    errors = error_rows(sql, prefix)
    assert errors == {13: "ValueError: source 13 is bad", 77: "ValueError: source 77 is bad"}
    assert_committed_last(calls, rows)
    # A culprit runs in its group, then alone (an error: no retry); the keys before it
    # in its group ran once more, alone, in the same worker after their rollback.
    assert len(calls[13]) == 2 and len(calls[77]) == 2, (calls[13], calls[77])
    culprit_runs = {call.split("-")[0]: when for k in (13, 77) for call, when in calls[k][:1]}
    again = {k: c for k, c in calls.items() if len(c) > 1 and k not in (13, 77)}
    assert again, "no group held a key before its culprit: the test proves nothing"
    for key, made in again.items():
        assert len(made) == 2, (key, made)
        pid, when = made[0][0].split("-")[0], made[0][1]
        assert pid in culprit_runs and when <= culprit_runs[pid], (key, made, culprit_runs)
    assert jobs(sql, prefix) == {"error": 2}
    print(f"culprits 13, 77: {len(again)} key(s) rolled back with them and made again alone")


def test_a_worker_killed_mid_group_loses_nothing_reported_and_repeats_nothing_committed(djdask, sql, prefix, tmp_path):
    """Key 40 kills its worker (SIGSEGV) in the middle of a group: that group's uncommitted
    keys run again uncharged, the groups committed before it are not made again, and key 40
    alone fails, after max-attempts (2) calls."""
    seed(djdask)
    ledger = tmp_path / "ledger.txt"
    env = grouped_env(
        djdask,
        ledger,
        DJDASK_TEST_FAULTS="40=segv",
        DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS="2",
        DASK_DJDASK__CAMPAIGN__RETRY_BACKOFF="200ms",
    )
    started = time.monotonic()
    result = djdask("populate", "grouped", "--target", "Entry", "--workers", "2", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    calls, rows = calls_by_key(ledger), committed(sql, prefix)
    assert sorted(rows) == sorted(set(range(N)) - {40}), (rows.get(40), calls[40], result.stdout, result.stderr[-5000:])
    errors = error_rows(sql, prefix)
    assert list(errors) == [40] and errors[40].startswith("killed by signal 11 (SIGSEGV)"), errors
    assert len(calls[40]) == 2, calls[40]
    assert_committed_last(calls, rows)
    died = {call.split("-")[0] for call, _ in calls[40]}  # the processes key 40 killed
    again = {k: c for k, c in calls.items() if len(c) > 1 and k != 40}
    for key, made in again.items():
        # Every call but the committing one ran in a process that key 40 killed: a rolled-back group.
        assert {call.split("-")[0] for call, _ in made[:-1]} <= died, (key, made, died)
    assert jobs(sql, prefix) == {"error": 1}
    print(
        f"worker killed mid-group: {len(again)} uncommitted key(s) made again, campaign "
        f"{time.monotonic() - started:.1f} s"
    )


@on_one_backend("postgres")
def test_group_commit_refuses_tripartite_make_and_unknown_tables(djdask, sql, prefix, tmp_path):
    """A tripartite make() runs its own transaction and cannot share a group's; a name that is
    no table is a typo. Both are clear errors before anything is reserved."""
    seed(djdask, 5)
    for listed, expected in (
        ('["Split"]', "Split cannot run with group commit (djdask.campaign.group-commit): its make() is tripartite"),
        ('["Entyr"]', "djdask.campaign.group-commit names Entyr, which this pipeline has no Imported or Computed"),
    ):
        env = djdask.env(DJDASK_TEST_LEDGER=str(tmp_path / "l"), DASK_DJDASK__CAMPAIGN__GROUP_COMMIT=listed)
        result = djdask("populate", "grouped", "--workers", "1", env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    schema = f"{prefix}_grouped"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__entry')}") == 0
    for jobs_table in {"~~entry", "~~split"} & sql.tables(schema):
        assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, jobs_table)}") == 0
