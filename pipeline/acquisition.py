"""Acquisition: mice, sessions, scans, and the (synthetic) scan movies.

Arrays are xarray objects stored as Zarr (``<xarray@>``, the default store):
the movie has dimensions (time, y, x) with time in seconds.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import compute
from .schemas import acquisition as schema
from .schemas import dj

__all__ = ["Mouse", "Scan", "ScanMovie", "Session"]


@schema
class Mouse(dj.Manual):
    definition = """
    mouse_id : int32
    ---
    sex : enum('M', 'F', 'U')
    date_of_birth : date
    """


@schema
class Session(dj.Manual):
    definition = """
    -> Mouse
    session_id : int16
    ---
    session_date : date
    """


@schema
class Scan(dj.Manual):
    definition = """
    -> Session
    scan_id : int16
    ---
    n_frames : int32
    height : int16
    width : int16
    n_cells : int16          # cells planted in the synthetic field of view
    drift_px : int16         # bound of the simulated drift, in pixels
    frame_rate : float32     # Hz
    """


@schema
class ScanMovie(dj.Imported):
    definition = """
    -> Scan
    ---
    movie : <xarray@>        # float32 (time, y, x), time in seconds
    true_shifts : <xarray@>  # int16 (time, axis): the drift that was simulated, axis = y, x
    """

    def make(self, key):
        scan = (Scan & key).fetch1()
        movie, shifts = compute.synthetic_movie(
            seed=(key["mouse_id"], key["session_id"], key["scan_id"]),
            n_frames=scan["n_frames"],
            height=scan["height"],
            width=scan["width"],
            n_cells=scan["n_cells"],
            drift_px=scan["drift_px"],
            frame_rate=float(scan["frame_rate"]),
        )
        time = np.arange(len(movie)) / float(scan["frame_rate"])
        self.insert1(
            {
                **key,
                "movie": xr.DataArray(
                    movie,
                    dims=("time", "y", "x"),
                    coords={"time": time},
                    name="movie",
                    attrs={"units": "a.u.", "frame_rate_hz": float(scan["frame_rate"])},
                ),
                "true_shifts": xr.DataArray(
                    shifts,
                    dims=("time", "axis"),
                    coords={"time": time, "axis": ["y", "x"]},
                    name="true_shifts",
                    attrs={"units": "pixels"},
                ),
            }
        )
