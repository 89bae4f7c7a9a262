"""A following campaign runs for weeks: its error threshold counts each UTC day's errors
(djdask.records.notify.ErrorWatch), told to a real HTTP receiver."""

from __future__ import annotations

import datetime
import time

import dask

from djdask.records.notify import ErrorWatch
from tests.integration.test_notify import Hooks


def test_a_following_campaigns_error_threshold_counts_each_utc_day():
    hooks = Hooks()
    day = [datetime.date(2026, 12, 7)]
    settings = {"djdask.campaign.notify": {"error-threshold": 3, "webhooks": [f"{hooks.url}/hook"]}}
    try:
        with dask.config.set(settings):
            following = ErrorWatch({"id": "c1", "module": "lab", "follow": True}, [], today=lambda: day[0])
            assert not following.see("Scan", 2)
            assert following.see("Scan", 3)
            assert not following.see("Scan", 9)  # once a day
            day[0] = datetime.date(2026, 12, 8)
            assert not following.see("Scan", 11)  # 2 today
            assert following.see("Scan", 12)  # 3 today
            once = ErrorWatch({"id": "c2", "module": "lab"}, [], today=lambda: day[0])
            assert once.see("Scan", 3)
            day[0] = datetime.date(2026, 12, 9)
            assert not once.see("Scan", 30)  # a campaign that does not follow tells once in all
            deadline = time.monotonic() + 10
            while len(hooks.bodies) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        hooks.close()
    texts = sorted(body["text"] for body in hooks.bodies)
    assert len(texts) == 3, texts
    assert "table Scan has 3 error(s) today (2026-12-07, UTC), past the threshold of 3" in texts[0]
    assert "table Scan has 3 error(s) today (2026-12-08, UTC)" in texts[1]
    assert "campaign c2 of lab: table Scan has 3 error(s), past" in texts[2]
