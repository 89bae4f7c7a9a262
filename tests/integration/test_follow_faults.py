"""Faults a following campaign (``djdask populate --follow``) meets over days (issue 31,
items 3, 4 and 7):

- the database restarted while it follows, idle and with keys in flight, down longer than
  ``djdask.campaign.outage-tolerance``: a following campaign waits without a limit (a
  campaign that ends would exit 2), says so, and makes what arrives once it is back;
- its SLURM workers released after ``djdask.campaign.idle-after`` without work, and a new
  job asked for when new rows arrive;
- error rows put back to pending by ``djdask.campaign.retry-errors-after`` and made again.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter

import pytest

from tests.integration.batch_campaigns import JOB_NAME, RUNNING, Said, queue_empties, write_profile
from tests.integration.test_follow import INTERVAL, follow_env, rows, until
from tests.integration.test_follow import until as until_
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger
from tests.integration.test_notify import Hooks

pytestmark = pytest.mark.integration

#: The outage tolerance of the outage tests, and how long their server stays down (3 times it).
TOLERANCE, DOWN = 5.0, 15.0


def committed(sql, prefix: str) -> set[int]:
    return {r[0] for r in sql.query(f"SELECT source_id FROM {sql.table(prefix + '_ledger', '__entry')}")}


def insert_sources(sql, prefix: str, keys) -> None:
    source = sql.table(prefix + "_ledger", "source")
    sql.query(f"INSERT INTO {source} (source_id) VALUES " + ", ".join(f"({k})" for k in keys))


def restart_outage(server, djdask, sql, prefix, tmp_path, *, busy: bool) -> str:
    """A following campaign on the ledger pipeline (2 keys made, then idle); the server
    crashed (``busy``: just after a wave of 10 new rows, with keys in flight) and kept down
    ``DOWN`` s, three times the outage tolerance; then restarted, and 3 new rows inserted.
    Returns a line of figures."""
    seed_ledger(djdask, 2)
    ledger = tmp_path / "ledger.txt"
    hooks = Hooks()  # the notifications: the outage past the tolerance, and the stop
    env = {
        **follow_env(djdask, tmp_path),
        "DJDASK_TEST_MAKE_SECONDS": "1" if busy else "0.2",
        "DASK_DJDASK__CAMPAIGN__OUTAGE_TOLERANCE": f"{TOLERANCE:.0f}s",
        "DASK_DJDASK__CAMPAIGN__NOTIFY__WEBHOOKS": json.dumps([f"{hooks.url}/hook"]),
    }
    run = Said(djdask, env, "populate", "ledger", "--follow", "--workers", "2")

    def until(predicate, timeout: float, what: str) -> float:  # with what the campaign said
        try:
            return until_(predicate, timeout, what)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{run.stderr[-8000:]}") from None

    crashed = False
    fresh = None
    in_flight: set[int] = set()
    try:
        until(lambda: rows(sql, prefix) == 2, 120, "the first keys")
        time.sleep(INTERVAL)  # idle: nothing to make, looking every interval
        n = 2
        if busy:
            insert_sources(sql, prefix, range(2, 12))
            n = 12
            until(lambda: len(ledger_lines(ledger)) >= 5, INTERVAL + 30, "the wave's first make() calls")
            made = committed(sql, prefix)
            started = {int(line[0]) for line in ledger_lines(ledger)}
            in_flight = started - made
        server.crash()
        crashed = True
        down_at, down_wall = time.monotonic(), time.time()
        if busy:
            # Checked after the crash (a key that committed meanwhile left the set small, never wrong).
            assert in_flight and len(made) < n, f"no key in flight at the crash: started {started}, made {made}"
        while time.monotonic() - down_at < DOWN:
            assert run.proc.poll() is None, f"the following campaign stopped during the outage:\n{run.stderr}"
            time.sleep(0.5)
        server.restart()
        crashed = False
        fresh = server.client()  # the fixture's client died with the server
        insert_sources(fresh, prefix, range(n, n + 3))
        n += 3
        took = until(lambda: rows(fresh, prefix) == n, 90, "the rows inserted after the restart")
        assert run.proc.poll() is None, run.stderr
    finally:
        if crashed:
            server.restart()  # the server is the session's: leave it running for the next tests
        result = run.finish(60, stop=signal.SIGTERM)
        deadline = time.monotonic() + 10
        while len(hooks.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        hooks.close()
    told_by_hook = [b["text"] for b in hooks.bodies]
    assert len(told_by_hook) == 2, told_by_hook
    assert sum("longer than djdask.campaign.outage-tolerance" in text for text in told_by_hook) == 1, told_by_hook
    assert sum("stopped following" in text for text in told_by_hook) == 1, told_by_hook
    check = fresh or server.client()
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        said = " ".join(result.stderr.split())
        assert said.count("unreachable since") == 1, result.stderr  # said once, not per statement or look
        assert said.count("a following campaign waits for it without a limit") == 1, result.stderr
        assert "reachable again after" in said, result.stderr
        # A worker that gave up waiting (after the tolerance) would charge its key an attempt.
        assert "failed transiently" not in said, result.stderr
        assert check.scalar(f"SELECT COUNT(*) FROM {check.table(prefix + '_ledger', '__entry')}") == n
        assert check.jobs_counts(f"{prefix}_ledger", "__entry") == {}  # none reserved, pending or in error
    finally:
        check.close()
    calls = Counter(int(line[0]) for line in ledger_lines(ledger))
    assert set(calls) == set(range(n)), calls
    again = {k: c for k, c in calls.items() if c > 1}
    # Only a make() the crash cut off runs again (its transaction rolled back): at most one per worker.
    assert set(again) <= in_flight and len(again) <= 2 and all(c == 2 for c in again.values()), (again, in_flight)
    [(told, _)] = run.when(r"longer than djdask.campaign.outage-tolerance")
    return (
        f"{server.backend} {'busy' if busy else 'idle'}: down {DOWN:.0f} s (tolerance {TOLERANCE:.0f} s); "
        f"in flight at the crash {sorted(in_flight)}; made again {sorted(again)}; "
        f"crash to the no-limit notice {told - down_wall:.1f} s; "
        f"rows inserted after the restart made in {took:.1f} s"
    )


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_a_following_campaign_waits_out_a_restart_while_idle(server, djdask, sql, prefix, tmp_path):
    """Idle, the server killed and kept down three times the outage tolerance: the following
    campaign does not stop (a campaign that ends would exit 2 past the tolerance); it says once
    that the database is unreachable and once, past the tolerance, that it waits without a
    limit; after the restart new rows are made.  SIGTERM: exit 0, every key made once, nothing
    left reserved, pending or in error."""
    print(restart_outage(server, djdask, sql, prefix, tmp_path, busy=False))


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_a_following_campaign_waits_out_a_restart_with_keys_in_flight(server, djdask, sql, prefix, tmp_path):
    """As the idle test, with the server killed while a wave of 10 keys of 1 s is being made:
    the keys in flight wait for the database on their workers (past the tolerance too: had
    they given up, their attempts would be spent and they would be error rows), the rest of
    the wave and the rows inserted after the restart are made; only a make() the crash cut
    off runs again."""
    print(restart_outage(server, djdask, sql, prefix, tmp_path, busy=True))


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_retry_errors_after_makes_error_rows_again(server, djdask, sql, prefix, tmp_path):
    """A make() that fails the first time it sees a key (an error row, not a transient
    failure) and succeeds after: with retry-errors-after 3 s, the following campaign puts the
    error rows back to pending at a look no sooner than 3 s after they were recorded, and makes
    them; a key inserted later fails and is made again the same way.  Without the setting the
    rows would stay errors (the campaign never retries a make()'s own error).  SIGTERM: exit
    0, each key called twice, no error row left."""
    retry_after = 3.0
    ledger = tmp_path / "ledger.txt"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MARKER_DIR=str(markers),
        DASK_DJDASK__CAMPAIGN__FOLLOW_INTERVAL=f"{INTERVAL}s",
        DASK_DJDASK__CAMPAIGN__RETRY_ERRORS_AFTER=f"{retry_after:.0f}s",
    )
    seeded = djdask.python("import mending; mending.Recording.insert({'recording_id': i} for i in range(3))", env=env)
    assert seeded.returncode == 0, seeded.stderr
    schema = f"{prefix}_mending"
    reading = sql.table(schema, "__reading")
    made = lambda: sql.scalar(f"SELECT COUNT(*) FROM {reading}")  # noqa: E731
    errors = lambda: sql.jobs_counts(schema, "_reading").get("error", 0)  # noqa: E731
    run = Said(djdask, env, "populate", "mending", "--follow", "--workers", "2")
    delays = []
    try:
        until(lambda: errors() == 3, 120, "the first make() calls' error rows")
        seen = time.monotonic()
        assert made() == 0
        delays.append(until(lambda: made() == 3, retry_after + INTERVAL + 30, "the error rows made again"))
        assert time.monotonic() - seen >= retry_after - 1, "error rows re-pended before retry-errors-after"
        sql.query(f"INSERT INTO {sql.table(schema, 'recording')} (recording_id) VALUES (3)")
        until(lambda: errors() == 1, INTERVAL + 30, "the new key's error row")
        seen = time.monotonic()
        delays.append(until(lambda: made() == 4, retry_after + INTERVAL + 30, "the new key made again"))
        assert time.monotonic() - seen >= retry_after - 1, "error row re-pended before retry-errors-after"
        assert run.proc.poll() is None, run.stderr
    finally:
        result = run.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # Its summary: 4 made, no error left (each error tried again, a retry), so exit 0 above.
    assert re.search(r"^Reading\s+4\s+0\s+4\s", result.stdout, re.M), result.stdout
    assert Counter(int(line[0]) for line in ledger_lines(ledger)) == Counter({0: 2, 1: 2, 2: 2, 3: 2})
    assert sql.jobs_counts(schema, "_reading") == {}
    print(
        f"{server.backend}: error rows made again {[round(d, 1) for d in delays]} s after they were seen "
        f"(retry-errors-after {retry_after:.0f} s, interval {INTERVAL:.0f} s)"
    )


@pytest.mark.xdist_group("slurm")
@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_slurm_workers_are_released_when_idle_and_asked_for_again(server, djdask, sql, prefix, slurm, tmp_path):
    """A following campaign on SLURM: its 2 keys made in SLURM jobs; with nothing to do, its
    jobs leave the queue within idle-after (5 s) + scale-down-after (2 s) + slack; new rows
    then get a new job, which makes them.  SIGTERM: exit 0, the queue empty, nothing
    reserved.  Failing, idle workers would hold nodes for as long as the campaign follows, or
    a campaign with none would never ask again."""
    idle_after, scale_down = 5.0, 2.0
    ledger = tmp_path / "ledger.txt"
    seed_ledger(djdask, 2)
    env = djdask.env(
        **slurm.env,
        **write_profile(tmp_path, **{"scale-down-after": f"{scale_down:.0f}s"}),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="0.5",
        DASK_DJDASK__CAMPAIGN__FOLLOW_INTERVAL=f"{INTERVAL}s",
        DASK_DJDASK__CAMPAIGN__IDLE_AFTER=f"{idle_after:.0f}s",
    )

    def jobs() -> list[dict[str, str]]:
        return [j for j in slurm.queue() if j["name"] == JOB_NAME]

    run = Said(djdask, env, "populate", "ledger", "--follow", "--cluster", "testslurm")
    try:
        until(lambda: rows(sql, prefix) == 2, 180, "the first keys")
        last_made = time.monotonic()
        first_jobs = {job for _, _, job, *_ in ledger_lines(ledger)}
        assert "-" not in first_jobs, "a make() ran outside SLURM"
        released = until(lambda: not jobs(), idle_after + scale_down + 30, "the idle jobs released")
        released_after = time.monotonic() - last_made
        assert released_after >= idle_after - 1, f"jobs released {released_after:.1f} s after the last key"
        time.sleep(INTERVAL)
        assert not jobs(), f"a job was asked for with nothing to do: {jobs()}"
        assert run.proc.poll() is None, run.stderr

        inserted, inserted_wall = time.monotonic(), time.time()
        insert_sources(sql, prefix, (2, 3))
        to_running = until(
            lambda: any(j["state"] in RUNNING and j["id"] not in first_jobs for j in jobs()), 120, "a new job running"
        )
        until(lambda: rows(sql, prefix) == 4, 120, "the new keys")
        made_in = time.monotonic() - inserted
        lines = ledger_lines(ledger)
        first_new = min(float(start) for key, _, _, start, *_ in lines if int(key) >= 2) - inserted_wall
        new_jobs = {job for key, _, job, *_ in lines if int(key) >= 2}
        assert "-" not in new_jobs and not new_jobs & first_jobs, (first_jobs, new_jobs)
    finally:
        result = run.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert Counter(int(line[0]) for line in ledger_lines(ledger)) == Counter(range(4))
    assert queue_empties(slurm, 60), f"jobs left in the queue: {slurm.queue()}"
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    print(
        f"slurm: last key made to no job {released_after:.1f} s (polled {released:.1f} s; idle-after {idle_after:.0f} s, "
        f"scale-down-after {scale_down:.0f} s); insert to a new job running {to_running:.1f} s, to the first new "
        f"make() {first_new:.1f} s, to both new keys made {made_in:.1f} s; jobs {sorted(first_jobs)} then "
        f"{sorted(new_jobs)}"
    )
