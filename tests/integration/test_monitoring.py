"""`djdask errors` and `djdask status` read only the database: checked against SQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


def test_errors_are_grouped_by_message(djdask, sql, prefix):
    assert djdask.python("import failing; failing.Thing.insert({'thing_id': i} for i in range(12))").returncode == 0
    assert djdask("populate", "failing", "--workers", "1").returncode == 1
    result = djdask("errors", "failing", "--json")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)["errors"]
    jobs = sql.table(f"{prefix}_failing", "~~outcome")
    total = sql.scalar(f"SELECT COUNT(*) FROM {jobs} WHERE status = 'error'")
    divisible = sql.scalar(
        f"SELECT COUNT(*) FROM {jobs} WHERE status = 'error' AND error_message LIKE "
        "'ValueError: value % is divisible by 3%'"
    )
    detector = sql.scalar(
        f"SELECT COUNT(*) FROM {jobs} WHERE status = 'error' AND error_message LIKE "
        "'RuntimeError: the detector was off%'"
    )
    assert (total, divisible, detector) == (8, 4, 4)
    assert sorted((g["table"], g["count"]) for g in groups) == [("Outcome", divisible), ("Outcome", detector)]
    for g in groups:
        key = g["example_key"]["thing_id"]
        stored = sql.scalar(f"SELECT error_message FROM {jobs} WHERE thing_id = %s", (key,))
        assert stored == g["message"]
    text = djdask("errors", "failing", "--table", "Outcome")
    assert text.returncode == 0 and "Outcome: 4 x RuntimeError: the detector was off" in text.stdout
    assert "8 error row(s)" in text.stdout


HOLD = """
import sys, time
import ledger
from djdask.jobs.queue import JobQueue
q = JobQueue(ledger.Entry())
q.enqueue()
keys = q.claim(5)
print(len(keys), flush=True)
time.sleep(120)
"""


def test_status_shows_who_holds_reservations(djdask, sql, prefix):
    """A process holding 5 reserved keys: `djdask status` names its host and pid with the
    count and the oldest reservation time, as the jobs table has them."""
    assert djdask.python("import ledger; ledger.Source.insert({'source_id': i} for i in range(9))").returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD], env=djdask.env(), cwd=djdask.cwd, stdout=subprocess.PIPE, text=True
    )
    try:
        line = holder.stdout.readline()
        while line and not line.strip().isdigit():  # DataJoint says it connected
            line = holder.stdout.readline()
        assert line.strip() == "5"
        result = djdask("status", "ledger", "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        jobs = sql.table(f"{prefix}_ledger", "~~entry")
        expected = sql.query(
            f"SELECT host, pid, COUNT(*), MIN(reserved_time) FROM {jobs} WHERE status = 'reserved' GROUP BY host, pid"
        )
        assert len(expected) == 1 and expected[0][1] == holder.pid
        (h,) = status["holders"]
        assert (h["host"], h["pid"], h["keys"], h["tables"]) == (expected[0][0], holder.pid, 5, ["Entry"])
        assert str(h["since"])[:19] == str(expected[0][3])[:19]
        assert {t["table"]: t["reserved"] for t in status["tables"]} == {"Entry": 5}
        text = djdask("status", "ledger")
        assert "Reservations held by:" in text.stdout and str(holder.pid) in text.stdout
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.5)
    released = djdask("release", "ledger")
    assert released.returncode == 0
    after = json.loads(djdask("status", "ledger", "--json").stdout)
    assert after["holders"] == []
