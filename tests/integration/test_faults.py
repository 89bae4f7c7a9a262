"""Faults caused for real, and what each costs: a key that exhausts its worker's memory, a
key that kills its worker with a signal, a key that hangs past its time limit.  At the
end every key has exactly one row or one error row, every good key was made once (the
ledger), only the culprits are in error with the reason in words, and nothing is left
reserved."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.conftest import on_one_backend
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger

pytestmark = pytest.mark.integration


def error_rows(sql, prefix) -> dict[int, str]:
    jobs = sql.table(f"{prefix}_ledger", "~~entry")
    return {int(k): m for k, m in sql.query(f"SELECT source_id, error_message FROM {jobs} WHERE status = 'error'")}


@on_one_backend("postgres")
def test_memory_hog_segfault_and_hang_harm_only_their_own_keys(djdask, sql, prefix, tmp_path):
    """Among 200 keys on two workers of 512 MiB: key 7 allocates 1.5 GiB, key 13 dies of
    SIGSEGV, key 21 never returns (limit 4 s).  Each worker death takes the keys that
    travelled with it; they must run again uncharged, and only the culprits fail: the
    first two after max-attempts (2) calls, the hang at once, each with why."""
    n = 200
    seed_ledger(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="0.02",
        DJDASK_TEST_FAULTS="7=memory,13=segv,21=hang",
        DASK_DJDASK__CAMPAIGN__WORKER_MEMORY="512MiB",
        DASK_DJDASK__CAMPAIGN__TIMEOUTS='{"Entry": "4s"}',
        DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS="2",
        DASK_DJDASK__CAMPAIGN__RETRY_BACKOFF="200ms",
    )
    started = time.monotonic()
    result = djdask("populate", "ledger", "--workers", "2", env=env, timeout=300)
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    calls = Counter(int(line[0]) for line in ledger_lines(ledger))
    assert set(calls) == set(range(n))
    assert {k: c for k, c in calls.items() if c != 1} == {7: 2, 13: 2}, (calls, result.stderr[-3000:])
    errors = error_rows(sql, prefix)
    assert sorted(errors) == [7, 13, 21], errors
    assert errors[7].startswith("killed: memory limit 512.00 MiB exceeded (peak ~"), errors[7]
    assert "attempts" not in errors[7], errors[7]  # the attempts are told in the stack, not the message
    assert errors[13] == "killed by signal 11 (SIGSEGV) while running this key", errors[13]
    assert errors[21] == "timed out after 4s"
    assert not any("KilledWorker" in m for m in errors.values())
    assert sql.jobs_counts(f"{prefix}_ledger", "_entry") == {"error": 3}
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n - 3
    summary = result.stdout
    assert "Entry" in summary and "3 error(s)" in summary, summary
    print(
        f"faults among {n} keys: campaign {seconds:.1f} s; calls: key 7 {calls[7]}, key 13 {calls[13]}, "
        f"key 21 {calls[21]}, others 1 each; errors: {errors}"
    )
