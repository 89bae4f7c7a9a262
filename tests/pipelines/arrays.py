"""A test pipeline for the <xarray@> codec: arrays that are kept, arrays whose make()
fails after writing, a large dask-backed array, values that are not xarray, and a
store that is not configured."""

import os
import resource
import time

import dask.array as da
import datajoint as dj
import numpy as np
import xarray as xr

from djdask import storage  # noqa: F401  (registers <xarray@>)
from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_arrays")


def small(key) -> xr.DataArray:
    n = key["source_id"]
    return xr.DataArray(
        np.arange(60, dtype=np.float32).reshape(3, 20) * (n + 1),
        dims=("cell", "time"),
        coords={"time": np.arange(20) * 0.5},
        name="traces",
    )


@schema
class Source(dj.Manual):
    definition = """
    source_id : int32
    """


# Declared before Kept: a make() that fails while tables declared before it still have keys
# to make runs again once they are done (djdask.planning.inputs), which would write a second orphan.
@schema
class Broken(dj.Computed):
    definition = """
    -> Source
    ---
    data : <xarray@>
    """

    def make(self, key):
        self.insert1({**key, "data": small(key)})  # the Zarr is written here...
        raise RuntimeError("make() failed after writing its array")  # ...and the row rolled back


@schema
class Kept(dj.Computed):
    definition = """
    -> Source
    ---
    data : <xarray@>
    """

    def make(self, key):
        time.sleep(float(os.environ.get("DJDASK_TEST_MAKE_SECONDS", "0")))
        self.insert1({**key, "data": small(key)})


@schema
class NotXarray(dj.Computed):
    definition = """
    -> Source
    ---
    data : <xarray@>
    """

    def make(self, key):
        self.insert1({**key, "data": np.zeros(3)})


@schema
class Elsewhere(dj.Computed):
    definition = """
    -> Source
    ---
    data : <xarray@nosuchstore>
    """

    def make(self, key):
        self.insert1({**key, "data": small(key)})


@schema
class Big(dj.Computed):
    definition = """
    -> Source
    ---
    data : <xarray@>
    nbytes : int64           # size of the array
    """

    class Memory(dj.Part):
        definition = """
        -> master
        ---
        peak_growth : int64  # bytes the worker's peak memory grew while storing the array
        """

    def make(self, key):
        frames = int(os.environ.get("DJDASK_TEST_BIG_FRAMES", "400"))  # 1 MiB each
        rng = da.random.default_rng(key["source_id"])
        movie = rng.standard_normal((frames, 512, 512), chunks=(16, 512, 512), dtype=np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.insert1(
            {**key, "data": xr.DataArray(movie, dims=("time", "y", "x"), name="movie"), "nbytes": int(movie.nbytes)}
        )
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.Memory.insert1({**key, "peak_growth": max(0, after - before)})
