"""The campaign commands while a submitted campaign runs and after it ends, with every clock
in another time zone: the djdask processes' own (``TZ``), the controller's database session
and the other commands' sessions, all different from UTC and from each other.

`djdask campaigns` once ended in a traceback while a campaign ran on PostgreSQL (its
``SELECT CURRENT_TIMESTAMP`` has a zone, the records' columns none), and every command had
been tried only on campaigns that had ended: here each runs at both moments, on both backends.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ARTIFACTS
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger, wait_for

pytestmark = pytest.mark.integration

#: The djdask processes' local time (Python's, the machine's): +05:30.
CLIENT_TZ = "Asia/Kolkata"
#: Per backend, the zone of the controller's database sessions and of the other commands'.
#: PostgreSQL's client library reads PGTZ; MySQL clients name no zone, so on MariaDB it is
#: the server's default for new sessions (the controller's stay in the zone they began in).
ZONES = {"postgresql": ("America/New_York", "Asia/Tokyo"), "mysql": ("-05:00", "+09:00")}
#: Prints the zone of a DataJoint session on PostgreSQL (last, after DataJoint's hello).
PG_ZONE = "import datajoint as dj; print(dj.conn().query(\"SELECT current_setting('TimeZone')\").fetchone()[0])"
#: How far apart two readings of "now" may be (the machine is loaded during the suite).
SLACK = datetime.timedelta(minutes=2)


def utc_offset(zone: str) -> datetime.timedelta:
    """The zone's offset from UTC now: ``-05:00`` or a tz database name."""
    if zone[0] in "+-":
        hours, minutes = zone[1:].split(":")
        sign = -1 if zone[0] == "-" else 1
        return sign * datetime.timedelta(hours=int(hours), minutes=int(minutes))
    return datetime.datetime.now(ZoneInfo(zone)).utcoffset()


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def sessions_in(sql, env: dict, zone: str) -> dict:
    """``env`` for djdask processes whose database sessions begin in ``zone``."""
    if sql.backend == "postgresql":
        return {**env, "PGTZ": zone}
    sql.query("SET GLOBAL time_zone = %s", (zone,))
    return env


def seconds(text: str) -> float:
    """A duration as ``djdask campaigns`` and ``report`` print it, short ones only (``3.20 s``,
    ``500.00 ms``); anything longer, as an offset of hours would be, fails to match."""
    value, unit = re.fullmatch(r"([\d.]+) (ms|s)", text).groups()
    return float(value) / (1000 if unit == "ms" else 1)


def parallel(djdask, env, *commands, probe: str | None = None):
    """The djdask commands at the same moment, each in its own process (and Python code
    ``probe`` in the same environment, its result last)."""
    with ThreadPoolExecutor(len(commands) + 1) as pool:
        results = [pool.submit(djdask, *command, env=env) for command in commands]
        if probe is not None:
            results.append(pool.submit(djdask.python, probe, env=env))
        return [r.result() for r in results]


def check_listing(out: str, campaign: str, state: str) -> float:
    """The campaign's line of `djdask campaigns`: its state, a start within minutes of now
    (UTC, as the heading says) and its duration in seconds."""
    assert "started (UTC)" in out.splitlines()[0], out
    line = re.search(rf"^{campaign}\s+{state}\s+.*?(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d)  +(\S+ m?s)  ", out, re.M)
    assert line, out
    started = datetime.datetime.fromisoformat(line.group(1))
    assert abs(started - utc_now()) < SLACK, f"started {started} is not UTC (now {utc_now()}):\n{out}"
    return seconds(line.group(2))


def check_record(record: dict, campaign: str, state: str) -> None:
    """The record as `djdask campaigns --json` gives it: times in UTC, in order, near now."""
    assert record["campaign"] == campaign and record["state"] == state, record
    started, heartbeat = (datetime.datetime.fromisoformat(record[k]) for k in ("started", "heartbeat"))
    assert started.utcoffset() == datetime.timedelta(0), record["started"]
    assert abs(started.replace(tzinfo=None) - utc_now()) < SLACK, record
    assert started <= heartbeat <= started + SLACK, record


def test_campaign_commands_while_it_runs_and_after_in_other_time_zones(djdask, sql, prefix, tmp_path):
    """`campaigns`, `campaigns --json`, `report`, `status`, the campaign page and `cancel`
    while a submitted campaign runs, then again once it ended. A traceback, a duration hours
    off, a live campaign marked lost or jobs rows not traced to it would each mean that a
    time zone (the machine's, the controller session's or the reader session's) leaked in."""
    n = 300
    seed_ledger(djdask, n)
    schema = prefix + "_ledger"
    ledger = tmp_path / "ledger.txt"
    writer, reader = ZONES[sql.backend]
    base = djdask.env(
        TZ=CLIENT_TZ,
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="0.3",
        DJ_JOBS_KEEP_COMPLETED="true",  # success rows stay, with their times, for the report to trace
        DASK_DJDASK__CAMPAIGN__HEARTBEAT="1s",  # lost after 3 s with its session gone, or 10 min
        DASK_DJDASK__CAMPAIGN__SUBMIT_DIR=str(tmp_path / "campaigns"),
    )
    pid = None
    try:
        submitted = djdask("submit", "ledger", "--workers", "1", env=sessions_in(sql, base, writer))
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        campaign, pid = re.search(
            r"Campaign ([0-9a-f]{8}) submitted: controller pid (\d+)\.", submitted.stdout
        ).groups()
        pid = int(pid)
        # In its first seconds the report says it is starting, never headings over no rows.
        early = djdask("report", campaign, env=base)
        assert early.returncode == 0, early.stdout + early.stderr
        assert "Starting:" in early.stdout or re.search(r"^Entry\s+\d", early.stdout, re.M), early.stdout

        made = f"SELECT COUNT(*) FROM {sql.table(schema, '__entry')}"
        wait_for(lambda: sql.scalar(made) >= 5, 120, "keys made")
        env = sessions_in(sql, base, reader)
        # The zones took effect: the controller's session writes the jobs tables' times in its
        # own (the test reads them as stored), the readers' sessions begin in theirs.
        kept = sql.scalar(f"SELECT MAX(completed_time) FROM {sql.table(schema, '~~entry')}")
        assert abs(kept - (utc_now() + utc_offset(writer))) < SLACK, (kept, utc_now(), writer)
        postgres = sql.backend == "postgresql"
        listing, listed, report, status, *more = parallel(
            djdask,
            env,
            ["campaigns", "ledger"],
            ["campaigns", "ledger", "--json"],
            ["report", campaign],
            ["status", "ledger"],
            # On PostgreSQL a session's zone is the client's choice (PGTZ, a role's setting): an
            # orphan check from another zone must not take the campaign's live keys. (MySQL
            # sessions all take the server's: this test's change of it mid-campaign is no case.)
            *([["release", "ledger"]] if postgres else []),
            probe=PG_ZONE if postgres else None,
        )
        if postgres:  # what a DataJoint session of the readers' environment runs in
            released, zone = more
            assert zone.stdout.split()[-1:] == [reader], zone.stdout + zone.stderr
            assert released.returncode == 0, released.stdout + released.stderr
            assert released.stdout.splitlines() == ["0 orphaned reservation(s) freed."], released.stdout
        else:  # MariaDB: the server's default for the readers' new sessions
            assert sql.scalar("SELECT @@global.time_zone") == reader
        for result in (listing, listed, report, status):
            assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
        running_for = check_listing(listing.stdout, campaign, "running")
        assert 0 < running_for < 300, listing.stdout
        [record] = json.loads(listed.stdout)
        check_record(record, campaign, "running")  # not lost: its heartbeat is seconds old in UTC
        assert [o["session_utc_offset"] for o in record["owners"]] == [utc_offset(writer).total_seconds()]
        assert f"Campaign {campaign} of ledger: running" in report.stdout
        assert 0 < seconds(re.search(r", running for (.+?); controllers", report.stdout).group(1)) < 300
        # The success rows kept so far are traced to the campaign across the zones.
        assert int(re.search(r"^Entry\s.*success (\d+)", report.stdout, re.M).group(1)) >= 5, report.stdout
        assert re.search(r"^Entry\s+\d+\s+\d+", status.stdout, re.M), status.stdout

        # The campaign page: how long it has run, and its record among the recent campaigns.
        page = re.sub(r"/(status|djdask)$", "/djdask", record["dashboard"])  # headless: the page itself
        state = json.loads(urllib.request.urlopen(page + "/state.json", timeout=30).read())
        assert 0 < time.time() - state["campaign"]["started"] < 300, state["campaign"]  # the page's "running for"
        entry = urllib.request.urlopen(f"{page}/campaigns/{campaign}", timeout=30).read().decode()
        shown = re.search(r"started (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC, ended -", entry)
        assert shown and abs(datetime.datetime.fromisoformat(shown.group(1)) - utc_now()) < SLACK, entry

        start = time.monotonic()
        cancelled = djdask("cancel", campaign, env=env)
        stopped = time.monotonic() - start
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert f"Campaign {campaign} stopped: cancelled." in cancelled.stdout
        assert stopped < 15, f"the campaign took {stopped:.1f} s to stop"
        print(f"cancel: the campaign stopped {stopped:.1f} s after `djdask cancel` started")
        # For people (the closing note): what each command printed while it ran.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"campaign-commands-while-running-{djdask.server.label}.txt").write_text(
            "".join(
                f"$ djdask {' '.join(command)}\n{result.stdout}\n"
                for command, result in (
                    (["report", campaign, "  # in its first seconds"], early),
                    (["campaigns", "ledger"], listing),
                    (["campaigns", "ledger", "--json"], listed),
                    (["report", campaign], report),
                    (["status", "ledger"], status),
                    (["cancel", campaign], cancelled),
                )
            )
        )
        wait_for(lambda: not _running(pid), 30, "the controller to exit")
    finally:
        if sql.backend == "mysql":
            sql.query("SET GLOBAL time_zone = 'SYSTEM'")
        if pid is not None and _running(pid):
            os.killpg(pid, signal.SIGKILL)

    listing, listed, report, status, again, *unknown = parallel(
        djdask,
        env,
        ["campaigns", "ledger"],
        ["campaigns", "ledger", "--json"],
        ["report", campaign],
        ["status", "ledger"],
        ["cancel", campaign],
        ["report", "abcdef12"],
        ["cancel", "not-an-id"],
    )
    for result in (listing, listed, report, status, again):
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    ran = check_listing(listing.stdout, campaign, "cancelled")
    assert running_for < ran < 300, listing.stdout
    [record] = json.loads(listed.stdout)
    check_record(record, campaign, "cancelled")
    assert record["exit_code"] == 130 and 5 <= record["keys_made"] < n, record
    assert record["ended"] == record["heartbeat"], record  # both set when it closed
    assert re.search(r"ended \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC after ", report.stdout), report.stdout
    # Every key the campaign made is traced to it, none held any more.
    made_keys = record["keys_made"]
    assert re.search(rf"^Entry\s+{made_keys}\s.*  success {made_keys}\s*$", report.stdout, re.M), report.stdout
    assert "No key is reserved" in status.stdout, status.stdout
    assert f"Campaign {campaign} has already ended: cancelled." in again.stdout
    for result in unknown:  # an id no campaign has, or no id: said so, no traceback
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "campaign" in result.stderr.lower(), result.stderr

    assert sql.jobs_counts(schema, "__entry").get("reserved", 0) == 0
    keys = Counter(int(k) for k, *_ in ledger_lines(ledger))
    assert max(keys.values()) == 1
    assert sql.scalar(made) == record["keys_made"]


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
