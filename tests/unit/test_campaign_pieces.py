"""The campaign's pure pieces, without a database: what a batch came to, the retry policy,
and which pool a table goes to."""

from __future__ import annotations

import dask.config
import pytest

from djdask.campaign.outcomes import RetryPolicy, classify
from djdask.campaign.pools import Pools, covers
from djdask.campaign.tables import fewest_explaining
from djdask.errors import DjdaskError


def outcome(key: int, status: str, message: str | None = None) -> dict:
    return {"key": {"k": key}, "status": status, "duration": 0.01, "error_message": message, "error_stack": None}


def test_classify_sorts_outcomes_by_what_happens_next():
    """Each status must land in its own bin: a made key mistaken for a failure would be made
    again; a transient one mistaken for an error would become an error row at once."""
    result = classify(
        [
            outcome(1, "success"),
            outcome(2, "skipped"),
            outcome(3, "error", "ValueError: x"),
            outcome(4, "transient", "LostConnectionError"),
            outcome(5, "requeue"),
        ]
    )
    assert result.made == [{"k": 1}, {"k": 2}]
    assert (result.succeeded, result.skipped) == (1, 1)
    assert result.failed == [({"k": 3}, "ValueError: x", None)]
    assert [o["key"] for o in result.transient] == [{"k": 4}]
    assert result.requeue == [{"k": 5}]


def test_retry_policy_backs_off_exponentially_then_fails_with_the_count():
    """Transient keys are retried with doubling waits until max-attempts; the last attempt's
    keys become error rows that say how many attempts were made."""
    policy = RetryPolicy(max_attempts=3, backoff=1.0)
    transient = [outcome(1, "transient", "OperationalError: (2013, 'Lost connection')")]
    first = policy.decide(1, transient)
    assert (first.retry, first.attempt, first.wait, first.failed) == ([{"k": 1}], 2, 1.0, [])
    second = policy.decide(2, transient)
    assert (second.attempt, second.wait) == (3, 2.0)
    last = policy.decide(3, transient)
    assert not last.retry
    # DataJoint's message, unchanged; the attempts are told in the stack.
    assert last.failed == [
        (
            {"k": 1},
            "OperationalError: (2013, 'Lost connection')",
            "djdask: gave up after 3 attempts, each failed transiently (djdask.campaign.max-attempts)",
        )
    ]
    assert policy.decide(1, []).retry == [] and policy.decide(1, []).failed == []


def test_retry_policy_from_config_explicit_arguments_win():
    with dask.config.set({"djdask.campaign.max-attempts": 7, "djdask.campaign.retry-backoff": "3s"}):
        assert RetryPolicy.from_config() == RetryPolicy(7, 3.0)
        assert RetryPolicy.from_config(max_attempts=2, backoff="250ms") == RetryPolicy(2, 0.25)


PROFILES = {
    "djdask.clusters.cpu": {"kind": "slurm", "cores": 1, "memory": "1GB"},
    "djdask.clusters.gpu": {"kind": "slurm", "cores": 1, "memory": "1GB", "resources": {"GPU": 1}},
}


def test_pools_route_by_setting_then_resources_then_default():
    """A table named in djdask.campaign.pools goes there; one that declares resources goes to a
    pool offering them; the rest to default. A wrong route runs GPU work on CPU nodes."""
    with dask.config.set({**PROFILES, "djdask.campaign.pools": {"Special": "gpu"}}):
        pools = Pools({"default": "cpu", "gpu": "gpu"}, None, window=2)
        assert pools.route("Special", None).name == "gpu"
        assert pools.route("Segmentation", {"GPU": 1}).name == "gpu"
        assert pools.route("Traces", None).name == "default"
        assert pools.route("Huge", {"GPU": 4}).name == "default"  # nobody offers it: default, keys wait


def test_pools_refuse_a_route_to_a_missing_pool_and_pools_without_default():
    with dask.config.set({**PROFILES, "djdask.campaign.pools": {"Traces": "fast"}}):
        pools = Pools({"default": "cpu"}, None, window=2)
        with pytest.raises(DjdaskError, match=r"djdask.campaign.pools.Traces.*'fast'.*--cluster fast=PROFILE"):
            pools.route("Traces", None)
    with dask.config.set(PROFILES):
        with pytest.raises(DjdaskError, match="no `default` pool.*--cluster default=PROFILE"):
            Pools({"gpu": "gpu"}, None, window=2)


def test_covers():
    assert covers({"GPU": 2, "MEM": 1}, {"GPU": 1})
    assert not covers({"GPU": 1}, {"GPU": 2})
    assert not covers(None, {"GPU": 1})
    assert covers(None, {})


def test_the_order_hint_names_the_fewest_tables_that_explain_every_wait():
    """Keys of a table whose make() reads SessionSummary waited while other tables were busy
    too; one wait ended when only SessionSummary was done.  The hint must name SessionSummary
    alone (naming every table busy at the time sent users to declare orders they do not
    need), two tables where no one explains every wait, and nothing for waits that say nothing."""
    waits = [
        frozenset({"Behavior", "MouseSummary", "SessionSummary"}),
        frozenset({"MouseSummary", "SessionSummary"}),
        frozenset({"SessionSummary"}),
    ]
    assert fewest_explaining(waits) == ["SessionSummary"]
    assert fewest_explaining([frozenset({"A"}), frozenset({"B"}), frozenset({"A", "B"})]) == ["A", "B"]
    assert fewest_explaining([frozenset({"B", "A"})]) == ["A"]  # a tie goes to the first name
    assert fewest_explaining([frozenset(), frozenset()]) == []
