"""What a worker tells about itself: whether a key may start before its lifetime ends
(walltime-aware dispatch), and the key it runs (the campaign page's longest-running keys)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from djdask.monitor.progress import longest_running
from djdask.worker.executor import RUNNING_METRIC, PipelinePlugin


def test_a_key_starts_only_if_the_lifetime_left_exceeds_its_expected_duration():
    """60 s left: a key expected to take 10 s starts; one expected to take 90 s does not, and
    then the worker starts nothing more (it retires when idle, a fresh job takes the key)."""
    plugin = PipelinePlugin("pipeline")
    assert not plugin.past_deadline(3600)  # no lifetime: a LocalCluster worker
    plugin.deadline = time.time() + 60
    assert not plugin.past_deadline(None) and not plugin.past_deadline(10)
    assert plugin.past_deadline(90)
    assert plugin.past_deadline(1)  # retiring now: not even a short key
    assert plugin.deadline <= time.time()


def test_longest_running_keys_come_from_the_workers_metrics():
    now = 1000.0
    workers = [
        SimpleNamespace(
            address="tcp://a", metrics={RUNNING_METRIC: {"table": "Trace", "key": "{'s': 1}", "since": 990}}
        ),
        SimpleNamespace(address="tcp://b", metrics={RUNNING_METRIC: None}),
        SimpleNamespace(
            address="tcp://c", metrics={RUNNING_METRIC: {"table": "Segment", "key": "{'s': 2}", "since": 400}}
        ),
        SimpleNamespace(address="tcp://d", metrics={}),
    ]
    running = longest_running(workers, now=now)
    assert [(r["table"], r["worker"], r["seconds"]) for r in running] == [
        ("Segment", "tcp://c", 600.0),
        ("Trace", "tcp://a", 10.0),
    ]
    assert longest_running(workers, limit=1, now=now)[0]["worker"] == "tcp://c"
