"""Scaling to a campaign's demand, on real Dask clusters (in-process LocalClusters)."""

from __future__ import annotations

import time

import pytest
from distributed import Client, LocalCluster

from djdask.clusters.kubernetes import DemandScaler
from djdask.clusters.scaling import Demand, DemandAdaptive


@pytest.fixture
def cluster():
    cluster = LocalCluster(n_workers=0, processes=False, threads_per_worker=1, dashboard_address=":0")
    yield cluster
    cluster.close()


def wait_for_workers(client: Client, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info(n_workers=-1)["workers"]) != n:
        assert time.monotonic() < deadline, f"{len(client.scheduler_info()['workers'])} workers, not {n}"
        time.sleep(0.1)


def test_adaptive_follows_the_demand_within_its_maximum(cluster):
    """No tasks on the scheduler at all: Dask's own adaptive would keep 0 workers. The demand
    alone decides: up to it, capped by maximum, and back down when it drops."""
    demand = Demand()
    cluster.adapt(Adaptive=DemandAdaptive, demand=demand, minimum=0, maximum=3, interval="100ms", wait_count=2)
    with Client(cluster) as client:
        time.sleep(0.5)
        assert len(client.scheduler_info()["workers"]) == 0
        demand.workers = 2
        wait_for_workers(client, 2)
        demand.workers = 50
        wait_for_workers(client, 3)
        time.sleep(0.5)
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 3
        demand.workers = 1
        wait_for_workers(client, 1)


def test_scaler_waits_before_scaling_down(cluster):
    demand = Demand()
    scaler = DemandScaler(cluster, demand, maximum=2, interval=0.1, after=1.5)
    scaler.start()
    try:
        with Client(cluster) as client:
            demand.workers = 5
            wait_for_workers(client, 2)
            demand.workers = 0
            time.sleep(0.8)
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2  # not yet: hysteresis
            wait_for_workers(client, 0)
    finally:
        scaler.stopped.set()
