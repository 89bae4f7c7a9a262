"""Adaptive batch sizes, without Dask or a database."""

import pytest

from djdask.campaign.batching import BatchSizer


def test_first_batch_has_one_key():
    assert BatchSizer(2.0, 1000).size() == 1


def test_millisecond_makes_get_large_batches_and_second_long_ones_small():
    fast, slow = BatchSizer(2.0, 1000), BatchSizer(2.0, 1000)
    fast.observe([0.001] * 5)
    slow.observe([1.0, 1.1])
    assert fast.size() == 1000  # capped
    assert slow.size() in (1, 2)
    hour = BatchSizer(2.0, 1000)
    hour.observe([3600.0])
    assert hour.size() == 1


def test_estimate_moves_toward_new_observations():
    sizer = BatchSizer(2.0, 10_000, smoothing=0.5)
    sizer.observe([0.01])
    assert sizer.size() == 200
    sizer.observe([0.03])
    assert sizer.size() == 100  # estimate 0.02 s per key


def test_few_pending_keys_are_spread_over_free_slots():
    sizer = BatchSizer(2.0, 1000)
    sizer.observe([0.05])
    assert sizer.size(pending=40, slots=4) == 10
    assert sizer.size(pending=3, slots=4) == 3


def test_bad_target_is_refused():
    with pytest.raises(ValueError):
        BatchSizer(0, 10)


def test_a_large_batch_outweighs_a_slow_first_key():
    """The first key pays for imports and cold caches; a batch of 50 keys after it must set
    the estimate (a batch-weighted mean would keep batches small for many rounds)."""
    sizer = BatchSizer(2.0, 10_000)
    sizer.observe([0.1])
    sizer.observe([0.002] * 50)
    assert 900 <= sizer.size() <= 1000


def test_last_keys_are_shared_over_all_slots():
    """With 4 slots seen free and one free now, 20 pending 50 ms keys must go 5 to a batch,
    not 20 to the one slot: the last tasks end together (guided self-scheduling)."""
    sizer = BatchSizer(2.0, 1000)
    sizer.observe([0.05])
    assert sizer.size(pending=100_000, slots=4) == 40
    assert sizer.size(pending=20, slots=1) == 5


def test_shares_are_not_cut_below_a_tenth_of_the_target():
    """Millisecond keys: 20 pending keys are 20 ms of work, less than a task costs to
    schedule and record; splitting them over 4 slots would only add tasks."""
    sizer = BatchSizer(2.0, 1000)
    sizer.observe([0.001])
    assert sizer.size(pending=100_000, slots=4) == 1000
    assert sizer.size(pending=1000, slots=1) == 250
    assert sizer.size(pending=20, slots=1) == 20
