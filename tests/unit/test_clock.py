"""Campaign times: what the records store (UTC) meets what Python and the jobs tables hold.

A campaign's duration, the jobs-table rows traced to it and the times printed must not
depend on the time zone of the machine, of the database session that wrote a time, or of
the one that reads it (issue 28: a traceback while a campaign ran on PostgreSQL).
"""

from __future__ import annotations

import datetime

from djdask.cli.campaigns import duration, no_figures, owner_windows
from djdask.db.clock import naive_utc, utc_text
from djdask.monitor.publisher import history_entry

UTC = datetime.timezone.utc
NEW_YORK = datetime.timezone(datetime.timedelta(hours=-5))
KOLKATA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
T0 = datetime.datetime(2026, 12, 4, 17, 0, 0)  # naive UTC, as the records' columns read


def test_a_time_with_a_zone_becomes_naive_utc_and_a_naive_one_stays():
    """PostgreSQL answers `SELECT CURRENT_TIMESTAMP` with the session's zone; subtracting it from
    a column's naive time raised TypeError. Converted, both are the same instant."""
    assert naive_utc(T0.replace(tzinfo=UTC) - datetime.timedelta(hours=5)) == T0 - datetime.timedelta(hours=5)
    assert naive_utc(datetime.datetime(2026, 12, 4, 12, 0, tzinfo=NEW_YORK)) == T0
    assert naive_utc(datetime.datetime(2026, 12, 4, 22, 30, tzinfo=KOLKATA)) == T0
    assert naive_utc(T0) is T0


def test_a_running_campaigns_duration_whatever_zone_now_comes_in():
    """A running campaign runs to now; a `now` with a zone (any) gives the same seconds as UTC."""
    record = {"started": T0, "ended": None, "heartbeat": T0, "state": "running"}
    for zone in (UTC, NEW_YORK, KOLKATA):
        now = (T0 + datetime.timedelta(seconds=42)).replace(tzinfo=UTC).astimezone(zone)
        assert duration(record, now) == 42.0


def test_durations_of_ended_waiting_and_earlier_version_records():
    """An ended campaign runs to its end; a submitted one to its last heartbeat; a record of an
    earlier version read against a UTC `now` (its start hours ahead) is never negative."""
    ended = {"started": T0, "ended": T0 + datetime.timedelta(minutes=3), "heartbeat": T0, "state": "finished"}
    assert duration(ended, T0 + datetime.timedelta(hours=9)) == 180.0
    waiting = {"started": T0, "ended": None, "heartbeat": T0 + datetime.timedelta(seconds=2), "state": "submitted"}
    assert duration(waiting, T0 + datetime.timedelta(hours=1)) == 2.0
    earlier = {"started": T0 + datetime.timedelta(hours=5, minutes=30), "ended": None, "heartbeat": T0}
    assert duration({**earlier, "state": "running"}, T0) == 0.0


def test_owner_windows_are_in_each_controllers_session_clock():
    """The jobs tables' times are the writing session's: a controller in New York (-5 h) that
    started at 17:00 UTC held rows stamped from 12:00; its successor's start, and the end,
    close its window in the same clock. Without the offset, its rows would be missed."""
    owners = [
        {"host": "a", "pid": 1, "started": str(T0), "session_utc_offset": -18000},
        {"host": "b", "pid": 2, "started": str(T0 + datetime.timedelta(hours=1)), "session_utc_offset": 19800},
    ]
    hour = datetime.timedelta(hours=1)
    first, second = owner_windows(owners, T0 + 2 * hour)
    assert first == ("a", 1, T0 - 5 * hour, T0 - 4 * hour)
    assert second == ("b", 2, T0 + hour + datetime.timedelta(hours=5.5), T0 + 2 * hour + datetime.timedelta(hours=5.5))
    # While it runs, the last controller's window has no end (its rows may be stamped after
    # the reader's `now`, in a clock ahead of the reader's).
    assert owner_windows(owners, None)[1][3] is None


def test_owner_windows_of_earlier_versions_keep_the_session_clock():
    """Records of earlier versions have no offset: their start (on PostgreSQL with the session's
    zone in the text) and end are in the session's clock already, and are used as they are."""
    owners = [{"host": "a", "pid": 1, "started": "2026-12-04 12:00:00.250000-05:00"}]
    [(host, pid, since, until)] = owner_windows(owners, T0)
    assert (host, pid) == ("a", 1)
    assert since == datetime.datetime(2026, 12, 4, 12, 0, 0, 250000) and until == T0


def test_times_are_printed_in_utc_and_say_so():
    """People read the same time on every machine; the page says UTC beside each time."""
    assert utc_text(datetime.datetime(2026, 12, 4, 12, 0, 5, 999000, tzinfo=NEW_YORK)) == "2026-12-04 17:00:05"
    assert utc_text(T0, zone=" UTC") == "2026-12-04 17:00:00 UTC"
    assert utc_text(None) == "-"
    assert utc_text("2026-12-04 17:00:00 UTC") == "2026-12-04 17:00:00 UTC"  # formatted already
    entry = history_entry({"campaign": "c", "started": T0, "ended": None, "accounting": None})
    assert entry["started"] == "2026-12-04 17:00:00 UTC" and entry["ended"] is None


def test_a_report_without_figures_says_why_instead_of_empty_headings():
    """In its first seconds a campaign has no accounting: `djdask report` says it is starting."""
    assert no_figures({"state": "submitted"}).startswith("Starting: its controller has not started")
    assert no_figures({"state": "running"}).startswith("Starting: no figures yet")
    assert no_figures({"state": "failed"}).startswith("No figures")
