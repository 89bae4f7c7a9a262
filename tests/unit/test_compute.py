"""The reference pipeline's computations, without a database."""

from __future__ import annotations

import numpy as np
import pytest

from djdask.pipeline import compute

SIZE = dict(n_frames=120, height=48, width=48, n_cells=8, drift_px=3, frame_rate=15.0)


def test_synthetic_movie_is_deterministic():
    """Same key, same movie: otherwise djdask and DataJoint's populate could not agree."""
    a, sa = compute.synthetic_movie(seed=(1, 2, 3), **SIZE)
    b, sb = compute.synthetic_movie(seed=(1, 2, 3), **SIZE)
    c, _ = compute.synthetic_movie(seed=(1, 2, 4), **SIZE)
    assert a.shape == (120, 48, 48) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert not np.array_equal(a, c)
    assert np.abs(sa).max() <= 3


@pytest.mark.parametrize("seed", [(1, 1, 1), (2, 3, 1), (5, 2, 2)])
def test_phase_correlation_recovers_the_simulated_drift(seed):
    """Registration must find the drift that was simulated, up to a constant offset of the
    template; if not, motion correction is not doing its job."""
    movie, true = compute.synthetic_movie(seed=seed, **SIZE)
    est = compute.phase_correlation_shifts(movie)
    diff = est.astype(int) - true
    diff -= np.round(np.median(diff, axis=0)).astype(int)
    assert (np.abs(diff).sum(axis=1) == 0).mean() >= 0.75
    assert np.abs(diff).max() <= 1


def test_apply_shifts_inverts_a_known_roll():
    rng = np.random.default_rng(0)
    frame = rng.normal(size=(16, 16)).astype(np.float32)
    shifts = np.array([[0, 0], [2, -1], [-3, 2]], dtype=np.int16)
    movie = np.stack([np.roll(frame, tuple(s), axis=(0, 1)) for s in shifts])
    assert np.array_equal(compute.apply_shifts(movie, shifts), np.stack([frame] * 3))


def test_label_regions_counts_4_connected_components():
    mask = np.array(
        [
            [1, 1, 0, 0, 1],
            [0, 1, 0, 0, 1],
            [0, 0, 0, 0, 0],
            [1, 0, 1, 1, 0],
            [0, 1, 0, 1, 0],  # the diagonal neighbour of (3,0) is not 4-connected
        ],
        dtype=bool,
    )
    labels, n = compute.label_regions(mask)
    assert n == 5
    assert labels[0, 0] == labels[1, 1] == 1
    assert labels[0, 4] == labels[1, 4] == 2
    assert labels[3, 2] == labels[3, 3] == labels[4, 3]
    assert labels[3, 0] != labels[4, 1]
    assert (labels[~mask] == 0).all()


def test_segmentation_finds_planted_cells():
    movie, true = compute.synthetic_movie(seed=(1, 1, 1), **SIZE)
    corrected = compute.apply_shifts(movie, compute.phase_correlation_shifts(movie))
    _, masks = compute.segment_cells(corrected, threshold=1.5, min_pixels=6)
    assert 3 <= len(masks) <= SIZE["n_cells"]
    traces = compute.extract_traces(corrected, masks)
    assert traces.shape == (len(masks), SIZE["n_frames"])
    stats = compute.cell_statistics(traces[0], SIZE["frame_rate"])
    assert stats["snr"] > 3 and stats["event_rate"] > 0
