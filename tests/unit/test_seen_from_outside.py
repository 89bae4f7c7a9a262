"""A campaign seen from outside (issue 31, item 5): its Prometheus metrics built from a
published state, the health verdict, the following line of the page, the smoothed
throughput and a following campaign's arrivals; and /metrics and /djdask/health served by a
real in-process scheduler without Dask's dashboard."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from djdask.monitor import (
    METADATA_KEY,
    CampaignBoard,
    DashboardPlugin,
    following_line,
    health_verdict,
    metric_families,
    sliding_rates,
)

NOW = 1_800_000_000.0


def published(t: float = NOW, *, following: dict | None = None, **extra) -> dict:
    """A state as StatePublisher.state publishes it, with two tables."""
    return {
        "version": 1,
        "time": t,
        "publish_interval": 1.0,
        "database_reachable": True,
        "notice": None,
        "campaign": {"id": "c1", "module": "lab.pipe", "host": "h", "user": "ana", "pid": 7, "started": NOW - 600},
        "tables": [
            {
                "table": "Scan",
                "depth": 0,
                "parents": [],
                "rows": 12,
                "made": 10,
                "errors": 2,
                "in_flight": 3,
                "pending": 5,
                "seconds": 60.0,
                # 5%-wide bins: 4 keys about 0.2 s, 1 about 3 s
                "durations": [[0.2, 0.21, 4], [3.0, 3.15, 1]],
            },
            {
                "table": "Trace",
                "depth": 1,
                "parents": ["Scan"],
                "rows": 0,
                "made": 0,
                "errors": 0,
                "in_flight": 0,
                "pending": 0,
                "seconds": 0.0,
            },
        ],
        "errors": [],
        "following": following,
        **extra,
    }


def scrape(state: dict | None, workers: dict | None = None) -> dict[str, list]:
    """The exposition text of ``metric_families`` read back by prometheus_client's own parser:
    each sample name with its (labels, value)."""

    class Collector:
        def collect(self):
            return metric_families(state, workers)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: dict[str, list], name: str, **labels) -> float:
    found = [v for lab, v in samples[name] if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


FOLLOWING = {
    "interval": 2.0,
    "looks": 4,
    "last_look": NOW - 1.5,
    "last_found": NOW - 40,
    "idle_since": NOW - 30,
    "next_look_in": 0.5,
    "enqueued": 6,
}


def test_metrics_per_table_and_of_following_from_a_published_state():
    """Counters of keys made and failed, gauges of pending and in flight per table, the make()
    histogram from the accounting's bins, workers per scheduler and the following state: each
    value as published.  Wrong if this fails: Prometheus would alert on counts the campaign
    never had."""
    samples = scrape(published(following=FOLLOWING), {"tcp://10.0.0.1:8786": 3})
    assert value(samples, "djdask_keys_made_total", table="Scan") == 10
    assert value(samples, "djdask_keys_failed_total", table="Scan") == 2
    assert value(samples, "djdask_keys_pending", table="Scan") == 5
    assert value(samples, "djdask_keys_in_flight", table="Scan") == 3
    assert value(samples, "djdask_keys_made_total", table="Trace") == 0
    assert value(samples, "djdask_workers", scheduler="tcp://10.0.0.1:8786") == 3
    # the 0.2-s keys fall under 0.5 s, not under 0.1 s; the 3-s one under 5 s; all under +Inf
    assert value(samples, "djdask_make_seconds_bucket", table="Scan", le="0.1") == 0
    assert value(samples, "djdask_make_seconds_bucket", table="Scan", le="0.5") == 4
    assert value(samples, "djdask_make_seconds_bucket", table="Scan", le="1.0") == 4
    assert value(samples, "djdask_make_seconds_bucket", table="Scan", le="5.0") == 5
    assert value(samples, "djdask_make_seconds_count", table="Scan") == 5
    assert value(samples, "djdask_make_seconds_sum", table="Scan") == pytest.approx(4 * 0.205 + 3.075, rel=0.05)
    assert not [lab for lab, _ in samples["djdask_make_seconds_count"] if lab["table"] == "Trace"], "no durations"
    assert value(samples, "djdask_following") == 1
    assert value(samples, "djdask_follow_looks_total") == 4
    assert value(samples, "djdask_follow_keys_found_total") == 6
    assert value(samples, "djdask_follow_last_look_timestamp_seconds") == NOW - 1.5
    assert value(samples, "djdask_follow_last_found_timestamp_seconds") == NOW - 40
    assert value(samples, "djdask_state_timestamp_seconds") == NOW
    assert value(samples, "djdask_database_reachable") == 1
    assert value(samples, "djdask_campaign_info", campaign="c1", module="lab.pipe", user="ana") == 1


def test_metrics_of_a_campaign_that_does_not_follow_and_of_none():
    """Not following: djdask_following 0 and no follow series (a last-look time of a campaign
    that never looks would read as a stuck one).  No state: only the workers."""
    samples = scrape(published())
    assert value(samples, "djdask_following") == 0
    assert not [name for name in samples if name.startswith("djdask_follow_")], sorted(samples)
    assert set(scrape(None, {"tcp://a:1": 0})) == {"djdask_workers"}


def test_health_is_200_while_fresh_and_503_when_stale_out_or_absent():
    """A liveness probe restarts what it finds unhealthy: a fresh state is healthy; one older than
    a few publish intervals (the loop is stuck or gone), a database the campaign cannot reach,
    or no state at all are not, each saying why."""
    code, body = health_verdict(published(following=FOLLOWING), age=0.8, now=NOW + 0.5)
    assert code == 200 and body["healthy"] and not body["why"], body
    assert body["following"] is True and body["database_reachable"] is True
    assert body["last_look"].startswith("2027-01-15T07:59:58.5") and body["last_look"].endswith("+00:00")
    assert body["last_look_seconds_ago"] == 2.0
    assert body["module"] == "lab.pipe" and body["campaign"] == "c1"

    code, body = health_verdict(published(), age=30.0, now=NOW)
    assert code == 503 and body["following"] is False and "30.0 s old" in body["why"][0], body
    # a slow publisher (60 s between states) is judged by its own interval: 5 of them
    assert health_verdict(published(publish_interval=60.0), age=120.0, now=NOW)[0] == 200
    assert health_verdict(published(publish_interval=60.0), age=301.0, now=NOW)[0] == 503

    notice = "Database db.lab:5432 unreachable since 12:03:10, retrying (OperationalError: ...)"
    code, body = health_verdict(published(database_reachable=False, notice=notice), age=0.1, now=NOW)
    assert code == 503 and body["database_reachable"] is False and notice in body["why"][0], body

    code, body = health_verdict(None, age=None, now=NOW)
    assert code == 503 and "no campaign" in body["why"][0], body


def test_following_line_says_idle_or_working():
    """The page's line for a following campaign: idle since when and the next look, or working
    and when a look last found work; nothing for a campaign that does not follow."""
    idle = following_line(FOLLOWING)
    assert idle.startswith("following: idle since 07:59:30 UTC, next look in 0 s"), idle
    assert "4 looks, every 2 s; 6 key(s) found by them" in idle, idle
    working = following_line({**FOLLOWING, "idle_since": None})
    assert working.startswith("following: working, last found work 07:59:20 UTC"), working
    assert following_line({**FOLLOWING, "idle_since": None, "last_found": None}).startswith("following: working (")
    assert following_line(FOLLOWING, finished=True).startswith("following: stopped")
    assert following_line(None) is None


def test_sliding_rates_spread_batches_into_a_steady_rate():
    """Keys that finish 10 at a time every 3 s read as 3.3 keys/s once the window is full, not as
    bursts of 10 keys/s between seconds of nothing; a change of pace shows within the window;
    points further apart than the window give the rate between neighbours."""
    times = list(range(0, 31))
    counts = [10 * (t // 3) for t in times]
    rates = sliding_rates(times, counts, 6.0)
    assert len(rates) == len(times) - 1
    assert all(abs(r - 10 / 3) < 0.7 for r in rates[6:]), rates
    bursts = sliding_rates(times, counts, 0.5)  # no smoothing: the bursts
    assert max(bursts) == 10 and min(bursts) == 0
    faster = counts[:20] + [counts[19] + 20 * (t - 19) for t in times[20:]]
    assert sliding_rates(times, faster, 6.0)[-1] == pytest.approx(20.0)
    assert sliding_rates([0.0, 100.0, 200.0], [0, 50, 150], 10.0) == [0.5, 1.0]


def test_board_throughput_is_smoothed_and_a_following_campaign_has_arrivals():
    """The page's throughput comes from the sliding window; a following campaign's board keeps,
    beside each point, the keys its looks had found (for the arrivals plot), and a campaign
    that does not follow has none."""
    board = CampaignBoard(window=6.0)
    for t in range(0, 31):
        state = published(NOW + t, following={**FOLLOWING, "enqueued": t // 10})
        state["campaign"]["started"] = NOW
        state["tables"][0]["made"] = 10 * (t // 3)
        assert board.update(state)
    minutes, rates = board.throughput()["Scan"]
    assert minutes[-1] == pytest.approx(0.5) and all(abs(r - 10 / 3) < 0.7 for r in rates[6:]), rates
    course = board.arrivals()
    assert course["found"][0] == 0 and course["found"][-1] == 3, course
    assert course["made"][-1] == 10 * 10 + 2, course  # made plus failed, all tables
    assert board.json()["following"]["enqueued"] == 3
    plain = CampaignBoard()
    plain.update(published())
    assert plain.arrivals() is None


def test_metrics_and_health_are_served_without_dask_dashboard():
    """On a real in-process scheduler with Dask's dashboard off (the tests' default, and
    headless campaigns'): /djdask/health answers 503 before any state and 200 after one; the
    scheduler's own /metrics has Dask's series and djdask's, with the published counts."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, processes=False, dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False}
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(DashboardPlugin(), name=DashboardPlugin.name)
        base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
        with pytest.raises(urllib.error.HTTPError) as before:
            urllib.request.urlopen(f"{base}/djdask/health")
        assert before.value.code == 503
        client.set_metadata(METADATA_KEY, published(time.time(), following={**FOLLOWING, "last_look": time.time()}))
        answer = urllib.request.urlopen(f"{base}/djdask/health")
        body = json.load(answer)
        assert answer.status == 200 and body["following"] is True and body["last_look_seconds_ago"] < 5, body
        text = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert "dask_scheduler_workers" in text, "Dask's own metrics are gone"
        samples = {
            (s.name, s.labels.get("table") or s.labels.get("scheduler")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("djdask_")
        }
        assert samples[("djdask_keys_made_total", "Scan")] == 10, samples
        assert samples[("djdask_following", None)] == 1, samples
        assert samples[("djdask_workers", cluster.scheduler.address)] == 1, samples
