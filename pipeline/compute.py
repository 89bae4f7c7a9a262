"""The numerical work of the reference pipeline, free of any database.

Each function is deterministic given its arguments: the tables call them from
``make()`` and the unit tests call them directly.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "apply_shifts",
    "cell_statistics",
    "extract_traces",
    "label_regions",
    "phase_correlation_shifts",
    "segment_cells",
    "synthetic_movie",
]


def _rng(*seed: int) -> np.random.Generator:
    return np.random.default_rng([int(s) for s in seed])


def synthetic_movie(
    *,
    seed: tuple[int, ...],
    n_frames: int,
    height: int,
    width: int,
    n_cells: int,
    drift_px: int,
    frame_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A two-photon-like movie: Gaussian cells with calcium transients, drift and noise.

    Returns
    -------
    movie : ndarray, float32, (n_frames, height, width)
    shifts : ndarray, int16, (n_frames, 2)
        The true (row, column) displacement of every frame.
    """
    rng = _rng(*seed)
    yy, xx = np.mgrid[0:height, 0:width]
    margin = drift_px + 4
    centers = rng.uniform([margin, margin], [height - margin, width - margin], size=(n_cells, 2))
    radii = rng.uniform(1.5, 2.5, size=n_cells)
    footprints = np.exp(
        -((yy[None] - centers[:, 0, None, None]) ** 2 + (xx[None] - centers[:, 1, None, None]) ** 2)
        / (2 * radii[:, None, None] ** 2)
    )
    # Calcium: Poisson spikes convolved with an exponential decay (tau 0.5 s).
    spikes = rng.poisson(0.5 / frame_rate, size=(n_cells, n_frames)).astype(np.float64)
    kernel = np.exp(-np.arange(int(3 * frame_rate)) / (0.5 * frame_rate))
    calcium = np.stack([np.convolve(s, kernel)[:n_frames] for s in spikes])
    baseline = rng.uniform(0.5, 1.0, size=n_cells)
    activity = baseline[:, None] + calcium
    clean = np.tensordot(activity.T, footprints, axes=1)  # frames x H x W
    # Drift: a bounded random walk of whole pixels.
    steps = rng.integers(-1, 2, size=(n_frames, 2))
    shifts = np.clip(np.cumsum(steps, axis=0), -drift_px, drift_px).astype(np.int16)
    shifts[0] = 0
    movie = np.empty_like(clean, dtype=np.float32)
    for t in range(n_frames):
        movie[t] = np.roll(clean[t], tuple(shifts[t]), axis=(0, 1))
    movie += rng.normal(0.0, 0.15, size=movie.shape).astype(np.float32)
    return movie, shifts


def _register(movie: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ref = reference - reference.mean()
    frames = movie - movie.mean(axis=(1, 2), keepdims=True)
    cross = np.fft.fft2(frames, axes=(1, 2)) * np.conj(np.fft.fft2(ref))[None]
    # Partial whitening: pure phase correlation (power 1) lets pixel noise
    # dominate small fields of view; plain correlation (power 0) blurs the peak.
    cross /= np.sqrt(np.abs(cross)) + 1e-12
    corr = np.fft.ifft2(cross, axes=(1, 2)).real
    h, w = reference.shape
    rows, cols = np.unravel_index(corr.reshape(len(movie), -1).argmax(axis=1), (h, w))
    rows = np.where(rows > h // 2, rows - h, rows)
    cols = np.where(cols > w // 2, cols - w, cols)
    return np.stack([rows, cols], axis=1).astype(np.int16)


def phase_correlation_shifts(movie: np.ndarray) -> np.ndarray:
    """Whole-pixel displacement of every frame by phase correlation, in two passes.

    The first pass registers every frame to frame 0; the second to the mean of
    the movie aligned by the first, which averages the noise away.  Returns an
    int16 array (n_frames, 2) of (row, column) shifts such that rolling frame
    ``t`` by ``-shifts[t]`` aligns it with the template.
    """
    first = _register(movie, movie[0])
    template = apply_shifts(movie, first).mean(axis=0)
    return _register(movie, template)


def apply_shifts(movie: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Undo ``shifts`` (from :func:`phase_correlation_shifts`) frame by frame."""
    out = np.empty_like(movie)
    for t, (dy, dx) in enumerate(shifts):
        out[t] = np.roll(movie[t], (-int(dy), -int(dx)), axis=(0, 1))
    return out


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 4-connected regions of a boolean image; 0 is background.

    Labels spread to each pixel's largest neighbouring label until nothing
    changes, then are renumbered 1..n in raster order of first appearance.
    """
    h, w = mask.shape
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:
        padded = np.pad(labels, 1)
        neighbours = np.stack([labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]).max(
            axis=0
        )
        spread = np.where(mask, neighbours, 0)
        if np.array_equal(spread, labels):
            break
        labels = spread
    values, first = np.unique(labels.ravel(), return_index=True)
    order = [v for _, v in sorted(zip(first, values)) if v != 0]
    renumbered = np.zeros_like(labels)
    for new, old in enumerate(order, start=1):
        renumbered[labels == old] = new
    return renumbered, len(order)


def segment_cells(corrected: np.ndarray, *, threshold: float, min_pixels: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Find cells as connected bright regions of the standard-deviation image.

    Returns
    -------
    summary : ndarray, float32 (height, width)
        The z-scored standard-deviation image that was thresholded.
    masks : list of ndarray of bool
        One mask per cell with at least ``min_pixels`` pixels, in raster order.
    """
    std_image = corrected.std(axis=0)
    z = (std_image - np.median(std_image)) / (std_image.std() + 1e-12)
    labels, n = label_regions(z > threshold)
    masks = [labels == i for i in range(1, n + 1)]
    masks = [m for m in masks if int(m.sum()) >= min_pixels]
    return z.astype(np.float32), masks


def extract_traces(corrected: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Mean fluorescence inside each mask, per frame: (n_cells, n_frames) float32."""
    if not masks:
        return np.zeros((0, len(corrected)), dtype=np.float32)
    flat = corrected.reshape(len(corrected), -1)
    weights = np.stack([m.ravel() for m in masks]).astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights @ flat.T).astype(np.float32)


def cell_statistics(trace: np.ndarray, frame_rate: float) -> dict[str, float]:
    """dF/F summary of one trace: baseline, peak, SNR and event rate (events/s)."""
    baseline = float(np.percentile(trace, 20))
    dff = (trace - baseline) / (abs(baseline) + 1e-6)
    noise = float(np.median(np.abs(dff - np.median(dff))) / 0.6745 + 1e-9)
    above = dff > 3 * noise
    events = int(np.count_nonzero(above[1:] & ~above[:-1]) + int(above[0]))
    return {
        "baseline": baseline,
        "peak_dff": float(dff.max()),
        "snr": float(dff.max() / noise),
        "event_rate": events * frame_rate / len(trace),
    }
