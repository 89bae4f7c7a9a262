"""The <xarray@> codec's chunking and checksum, without a store."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from orchestrator.storage import XarrayCodec, checksum, default_chunks


def test_default_chunks_split_the_leading_dimension_first():
    # 1000 frames of 512x512 float32 (1 MiB each): about 16 frames per 16 MiB chunk, frames whole
    chunks = default_chunks((1000, 512, 512), np.float32, limit=16 * 2**20)
    assert chunks[1:] == (512, 512) and 8 <= chunks[0] <= 16
    # a slice larger than the limit: every dimension is split
    big = default_chunks((10, 8192, 8192), np.float64, limit=16 * 2**20)
    assert all(c < n for c, n in zip(big[1:], (8192, 8192)))
    assert np.prod(big) * 8 <= 16 * 2**20
    assert default_chunks((5,), np.int16) == (5,)


def test_chunks_per_value_and_per_attribute():
    codec = XarrayCodec()
    ds = xr.Dataset({"movie": (("time", "y", "x"), np.zeros((100, 4, 4), np.float32))})
    assert codec._chunked(ds, "movie")["movie"].encoding["chunks"] == (100, 4, 4)
    lazy = xr.Dataset({"movie": (("time", "y", "x"), da.zeros((100, 4, 4), chunks=(10, 4, 4)))})
    assert codec._chunked(lazy, "movie")["movie"].encoding["chunks"] == (10, 4, 4)  # the value's own
    ds["movie"].encoding["chunks"] = (25, 2, 2)
    assert codec._chunked(ds, "movie")["movie"].encoding["chunks"] == (25, 2, 2)
    with dask.config.set({"djdask.storage.chunks": {"movie": {"time": 7}}}):
        assert codec._chunked(ds, "movie")["movie"].encoding["chunks"] == (7, 2, 2)
        assert codec._chunked(ds, "other")["movie"].encoding["chunks"] == (25, 2, 2)


def test_checksum_is_of_the_content_and_the_same_lazily():
    values = np.random.default_rng(0).standard_normal((50, 6, 6)).astype(np.float32)
    eager = xr.Dataset({"m": (("t", "y", "x"), values)})
    lazy = xr.Dataset({"m": (("t", "y", "x"), da.from_array(values, chunks=(7, 6, 6)))})
    assert checksum(eager) == checksum(lazy)
    changed = values.copy()
    changed[49, 5, 5] += 1
    assert checksum(xr.Dataset({"m": (("t", "y", "x"), changed)})) != checksum(eager)
    assert checksum(eager.rename({"t": "time"})) != checksum(eager)  # dims are part of it
