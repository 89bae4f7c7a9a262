"""Fitting a campaign's workers into the database server's free connections (djdask.db.capacity)."""

from __future__ import annotations

import pytest

from djdask.db.capacity import OWN_CONNECTIONS, Budget, fit


def test_workers_that_fit_are_left_alone():
    assert fit({"default": 8}, 8 + OWN_CONNECTIONS) == {"default": 8}
    assert fit({"default": 8, "gpu": 4}, 100) == {"default": 8, "gpu": 4}


def test_one_pool_is_capped_to_what_is_free_after_the_campaigns_own():
    assert fit({"default": 64}, 20) == {"default": 20 - OWN_CONNECTIONS}


def test_pools_share_what_is_free_in_proportion_and_use_all_of_it():
    caps = fit({"default": 60, "gpu": 20}, 43)  # 40 for workers
    assert caps == {"default": 30, "gpu": 10}
    caps = fit({"a": 7, "b": 7, "c": 7}, 3 + OWN_CONNECTIONS + 5)  # 8 for 21 planned
    assert sum(caps.values()) == 8 and all(1 <= c <= 7 for c in caps.values())


def test_every_pool_keeps_one_worker_or_the_campaign_cannot_run():
    assert fit({"default": 50, "gpu": 1}, OWN_CONNECTIONS + 2) == {"default": 1, "gpu": 1}
    with pytest.raises(ValueError):
        fit({"default": 50, "gpu": 1}, OWN_CONNECTIONS + 1)
    with pytest.raises(ValueError):
        fit({"default": 2}, OWN_CONNECTIONS)


def test_free_connections_leave_out_the_reserved_and_the_used():
    assert Budget("postgresql", limit=100, reserved=3, in_use=10).free == 87
    assert Budget("mysql", limit=10, reserved=0, in_use=12).free == 0
