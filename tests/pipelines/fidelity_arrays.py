"""A fidelity test pipeline of tripartite makes that read an upstream ``<xarray@>``.

``Movie`` (Computed, ``<xarray@>``) feeds ``MovieStats``, a tripartite make whose
``make_fetch`` returns the upstream array: DataJoint fetches it twice (before
``make_compute``, then again in the insert transaction) and compares the two.

``Clip`` feeds ``ClipCheck``, whose ``make_compute`` for the one clip
``CHANGED_CLIP`` replaces that clip's array in between: DataJoint must reject the
key with "Referential integrity failed! The `make_fetch` data has changed", in
DataJoint's populate() and in djdask alike.  No other table reads ``Clip``, so the
order in which tables run does not change any other result.
"""

import datajoint as dj
import numpy as np
import xarray as xr

from djdask import storage  # noqa: F401  (registers <xarray@>)
from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_fidelity_arrays")

#: The clip whose array ClipCheck.make_compute replaces: its key must fail.
CHANGED_CLIP = 3


@schema
class Recording(dj.Manual):
    definition = """
    recording_id : int32
    ---
    frames : int16
    """


def movie(recording_id: int, frames: int) -> xr.DataArray:
    data = np.arange(frames * 12, dtype=np.float32).reshape(frames, 3, 4) * (recording_id + 1)
    return xr.DataArray(data, dims=("time", "y", "x"), coords={"time": np.arange(frames) * 0.1}, name="movie")


@schema
class Movie(dj.Computed):
    definition = """
    -> Recording
    ---
    movie : <xarray@>
    """

    def make(self, key):
        frames = (Recording & key).fetch1("frames")
        self.insert1({**key, "movie": movie(key["recording_id"], frames)})


@schema
class MovieStats(dj.Computed):
    """Tripartite make with an upstream <xarray@> in what make_fetch returns."""

    definition = """
    -> Movie
    ---
    mean_frame : <blob>
    total : float64
    """

    def make_fetch(self, key):
        return ((Movie & key).fetch1("movie"),)

    def make_compute(self, key, arr):
        values = np.asarray(arr.values, dtype=np.float64)
        return values.mean(axis=0), float(values.sum())

    def make_insert(self, key, mean_frame, total):
        self.insert1({**key, "mean_frame": mean_frame, "total": total})


@schema
class Clip(dj.Computed):
    definition = """
    -> Recording
    ---
    clip : <xarray@>
    """

    def make(self, key):
        self.insert1({**key, "clip": movie(key["recording_id"], 4)})


@schema
class ClipCheck(dj.Computed):
    """Tripartite make whose make_compute, for one key, changes the upstream array it fetched."""

    definition = """
    -> Clip
    ---
    clip_sum : float64
    """

    def make_fetch(self, key):
        return ((Clip & key).fetch1("clip"),)

    def make_compute(self, key, clip):
        if key["recording_id"] == CHANGED_CLIP:
            # Another process replacing the upstream row while this key computes.
            replaced = movie(key["recording_id"], 4) + 1000
            Clip.update1({**key, "clip": replaced})
        return (float(np.asarray(clip.values, dtype=np.float64).sum()),)

    def make_insert(self, key, clip_sum):
        self.insert1({**key, "clip_sum": clip_sum})


AUTO = (Movie, MovieStats, Clip, ClipCheck)


def seed(recordings: int = 6) -> None:
    Recording.insert([{"recording_id": r, "frames": 5 + r} for r in range(1, recordings + 1)])
