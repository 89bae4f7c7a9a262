"""The campaign's Prometheus metrics, served with Dask's own on the scheduler's ``/metrics``.

distributed serves ``/metrics`` from ``prometheus_client``'s process-wide registry, in
which it registers its collectors once per process (``distributed.http.scheduler.
prometheus.core``).  djdask adds one collector to that registry the same way,
:class:`CampaignCollector`: at each scrape it builds the metrics from the state the campaign
last published (:func:`metric_families`, pure), so a campaign that stopped publishing keeps
its last values and ``djdask_state_timestamp_seconds`` says how old they are.  The
published state has every known secret masked already; no metric has a label that could
hold one (table names, the campaign's id, module, host and user).

Per table: keys made and failed (counters), pending and in flight (gauges), and the
``make()`` durations as a histogram, from the campaign's accounting (its 5%-wide log bins
fall into the buckets below: a bin straddling a bucket's bound counts in the next bucket,
and the sum is taken at each bin's middle, both within 5%).  Counters start again at zero
with each campaign, as Prometheus' ``rate()`` expects of a restart.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from djdask.monitor.dashboard import DashboardPlugin

__all__ = ["DURATION_BUCKETS", "CampaignCollector", "metric_families"]

#: The upper bounds (seconds) of the ``make()`` duration histogram's buckets: from a
#: millisecond ``make()`` to one of hours.
DURATION_BUCKETS = tuple(float(b) for b in "0.001 0.005 0.01 0.05 0.1 0.5 1 5 10 30 60 300 600 1800 3600 7200".split())


def _duration_histogram(family: HistogramMetricFamily, table: str, bins: list[list[float]]) -> None:
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    total = 0.0
    for low, high, n in bins:
        where = next((i for i, bound in enumerate(DURATION_BUCKETS) if high <= bound), len(DURATION_BUCKETS))
        counts[where] += int(n)
        total += n * math.sqrt(max(low, 0.0) * high)
    cumulative, buckets = 0, []
    for bound, n in zip([*map(floatToGoString, DURATION_BUCKETS), "+Inf"], counts):
        cumulative += n
        buckets.append((bound, cumulative))
    family.add_metric([table], buckets, sum_value=total)


def metric_families(state: dict[str, Any] | None, workers: dict[str, int] | None = None) -> list[Metric]:
    """The campaign's metrics from its published ``state`` (None: only the workers), and
    ``workers``: the number of workers of each scheduler (by address) the collector sees."""
    out: list[Metric] = []
    if workers is not None:
        gauge = GaugeMetricFamily("djdask_workers", "Workers connected to the scheduler", labels=["scheduler"])
        for address, n in sorted(workers.items()):
            gauge.add_metric([address], n)
        out.append(gauge)
    if not state or "tables" not in state:
        return out
    campaign = state.get("campaign") or {}
    info = GaugeMetricFamily(
        "djdask_campaign_info",
        "The campaign publishing to this scheduler (value 1)",
        labels=["campaign", "module", "host", "user"],
    )
    info.add_metric([str(campaign.get(k) or "") for k in ("id", "module", "host", "user")], 1)
    out.append(info)
    out.append(
        GaugeMetricFamily(
            "djdask_campaign_finished", "1 once the campaign has ended", value=int(bool(campaign.get("finished")))
        )
    )
    out.append(
        GaugeMetricFamily(
            "djdask_state_timestamp_seconds", "When the campaign published this state (Unix time)", value=state["time"]
        )
    )
    out.append(
        GaugeMetricFamily(
            "djdask_database_reachable",
            "0 while the campaign waits for its database",
            value=int(bool(state.get("database_reachable", True))),
        )
    )
    per_table = {
        "made": CounterMetricFamily("djdask_keys_made", "Keys made (or found made) per table", labels=["table"]),
        "errors": CounterMetricFamily("djdask_keys_failed", "Keys whose make() failed per table", labels=["table"]),
        "pending": GaugeMetricFamily("djdask_keys_pending", "Keys pending per table", labels=["table"]),
        "in_flight": GaugeMetricFamily("djdask_keys_in_flight", "Keys in flight per table", labels=["table"]),
    }
    durations = HistogramMetricFamily("djdask_make_seconds", "make() durations per table", labels=["table"])
    timed = False
    for t in state["tables"]:
        for field, family in per_table.items():
            family.add_metric([t["table"]], t.get(field) or 0)
        if t.get("durations"):
            _duration_histogram(durations, t["table"], t["durations"])
            timed = True
    out.extend(per_table.values())
    if timed:
        out.append(durations)
    following = state.get("following")
    out.append(GaugeMetricFamily("djdask_following", "1 for a following campaign", value=int(bool(following))))
    if following:
        out.append(CounterMetricFamily("djdask_follow_looks", "Looks for new work", value=following.get("looks") or 0))
        out.append(
            CounterMetricFamily(
                "djdask_follow_keys_found", "Keys the looks found (enqueued)", value=following.get("enqueued") or 0
            )
        )
        for name, key, what in (
            ("djdask_follow_last_look_timestamp_seconds", "last_look", "its last look"),
            ("djdask_follow_last_found_timestamp_seconds", "last_found", "a look last found work"),
            ("djdask_follow_idle_since_timestamp_seconds", "idle_since", "it went idle"),
        ):
            if following.get(key) is not None:
                out.append(GaugeMetricFamily(name, f"When {what} (Unix time)", value=following[key]))
        out.append(
            GaugeMetricFamily(
                "djdask_follow_next_look_seconds", "Seconds to its next look", value=following.get("next_look_in") or 0
            )
        )
    return out


class CampaignCollector:
    """The ``prometheus_client`` collector of the campaign pages in this process.

    One per process (:meth:`register`), as distributed's own, since the registry refuses a
    second collector of the same metrics; it serves the newest state among the schedulers
    whose :class:`~djdask.monitor.dashboard.DashboardPlugin` it knows (a campaign publishes
    the same state to each of its pools' schedulers) and each one's workers.
    """

    _instance: CampaignCollector | None = None

    def __init__(self) -> None:
        self.plugins: weakref.WeakSet[DashboardPlugin] = weakref.WeakSet()

    @classmethod
    def register(cls, plugin: DashboardPlugin) -> CampaignCollector:
        """Add ``plugin``'s scheduler to the process' collector, registered on first use."""
        if cls._instance is None:
            cls._instance = cls()
            REGISTRY.register(cls._instance)
        cls._instance.plugins.add(plugin)
        return cls._instance

    def describe(self) -> list[Metric]:
        return []  # the metrics depend on the state; the registry need not check them in advance

    def collect(self) -> Iterator[Metric]:
        plugins = [p for p in list(self.plugins) if p.scheduler is not None]
        for p in plugins:
            p.poll(p.scheduler)
        states = [p.board.state for p in plugins if p.board.state is not None]
        newest = max(states, key=lambda s: s["time"], default=None)
        workers = {str(p.scheduler.address): len(p.scheduler.workers) for p in plugins}
        yield from metric_families(newest, workers)
