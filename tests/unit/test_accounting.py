"""The accounting's arithmetic, the campaign id stamp, and how a campaign's end is recorded."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from djdask.campaign.loop import CampaignSummary, TableSummary, ending
from djdask.errors import DjdaskError
from djdask.records.accounting import Accounting, Durations, by_name


def test_percentiles_are_within_five_percent_for_any_count():
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 1.5) for _ in range(20_000)]
    durations = Durations()
    for v in values:
        durations.add(v)
    values.sort()
    for q in (0.5, 0.95):
        exact = values[int(q * (len(values) - 1))]
        assert durations.quantile(q) == pytest.approx(exact, rel=0.05)
    assert durations.low == values[0] and durations.high == values[-1]
    assert len(durations.bins) < 400  # memory does not grow with the keys


def test_histograms_of_two_controllers_add_up_to_the_whole():
    a, b, whole = Durations(), Durations(), Durations()
    for i in range(1, 200):
        (a if i % 3 else b).add(i / 10)
        whole.add(i / 10)
    merged = Durations.from_dict(a.as_dict())
    merged.merge(Durations.from_dict(b.as_dict()))
    assert merged.summary() == whole.summary()
    assert Durations().summary()["p50"] is None


def _pool(name="default", workers=2, worker_seconds=10.0, demand=None):
    return SimpleNamespace(
        name=name, profile=None, workers=workers, worker_seconds=worker_seconds, sized_at=None, demand=demand
    )


def test_snapshot_adds_to_what_earlier_controllers_recorded():
    first = Accounting()
    first.batch("Entry", "default", [{"status": "success", "duration": 1.0, "memory": 100}] * 3)
    first.batch("Entry", "default", [{"status": "error", "duration": 0.5, "memory": 300}])
    summary = TableSummary("Entry", succeeded=3, errors=1, retries=2)
    one = first.snapshot([summary], [_pool()], 30.0)
    [table] = one["tables"]
    assert table["made"] == 3 and table["errors"] == 1 and table["retries"] == 2
    assert table["busy_seconds"] == 3.5 and table["peak_memory"] == 300
    assert table["make_seconds"]["count"] == 3  # errors are no make() duration
    [pool] = one["pools"]
    assert pool["worker_seconds"] == 10.0 and pool["busy_seconds"] == 3.5 and pool["idle_seconds"] == 6.5

    second = Accounting(earlier=one)
    second.batch("Entry", "default", [{"status": "success", "duration": 2.0, "memory": 50}])
    two = second.snapshot([TableSummary("Entry", succeeded=1)], [_pool(worker_seconds=5.0)], 20.0)
    entry = by_name(two["tables"], "table")["Entry"]
    assert entry["made"] == 4 and entry["errors"] == 1 and entry["make_seconds"]["count"] == 4
    assert entry["make_seconds"]["max"] == 2.0 and entry["peak_memory"] == 300
    assert two["seconds"] == 50.0 and two["controllers"] == 2 and two["made"] == 4
    assert by_name(two["pools"], "pool")["default"]["worker_seconds"] == 15.0


def test_batch_pools_count_jobs_and_node_hours():
    kind = SimpleNamespace(
        settings=lambda name, raw: {"walltime": raw["walltime"]},
        walltime_seconds=lambda text: sum(int(p) * f for p, f in zip(text.split(":"), (3600, 60, 1))),
    )
    profile = SimpleNamespace(name="slurm", raw={"walltime": "02:30:00"}, kind=kind)
    pool = _pool(demand=SimpleNamespace(submitted=4))
    pool.profile = profile
    [entry] = Accounting().snapshot([], [pool], 1.0)["pools"]
    assert entry["jobs_submitted"] == 4 and entry["node_hours_requested"] == 10.0 and entry["profile"] == "slurm"


def test_how_a_campaign_ended():
    done = CampaignSummary(tables=[TableSummary("T", succeeded=2)])
    assert ending(done, None) == ("finished", 0)
    assert ending(CampaignSummary(tables=[TableSummary("T", errors=1)]), None) == ("finished", 1)
    assert ending(CampaignSummary(cancelled=True), None) == ("cancelled", 130)
    assert ending(done, KeyboardInterrupt()) == ("cancelled", 130)
    assert ending(done, DjdaskError("outage")) == ("failed", 2)
    assert ending(done, RuntimeError("bug")) == ("failed", 1)
    assert ending(CampaignSummary(cancelled=True), None, handing_over=True) == ("submitted", 0)
