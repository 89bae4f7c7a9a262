"""Imaging: motion correction, segmentation, traces and per-cell statistics.

Arrays are xarray objects stored as Zarr (``<xarray@>``): shifts (time, axis),
images (y, x), masks (cell, y, x), traces (cell, time).  Fetching one opens it
lazily; ``.values`` reads it.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import compute
from .acquisition import Scan, ScanMovie
from .schemas import dj
from .schemas import imaging as schema

__all__ = ["CellStats", "MotionCorrection", "Segmentation", "SegmentationParams", "Traces"]


def _corrected_movie(key) -> np.ndarray:
    movie = (ScanMovie & key).fetch1("movie").values
    shifts = (MotionCorrection & key).fetch1("shifts").values
    return compute.apply_shifts(movie, shifts)


def _image(array: np.ndarray, name: str) -> xr.DataArray:
    return xr.DataArray(array, dims=("y", "x"), name=name)


@schema
class MotionCorrection(dj.Computed):
    definition = """
    -> ScanMovie
    ---
    shifts : <xarray@>       # int16 (time, axis) estimated by phase correlation, axis = y, x
    max_shift : int16        # largest displacement found, in pixels
    mean_image : <xarray@>   # float32 (y, x) mean of the corrected movie
    """

    def make(self, key):
        movie = (ScanMovie & key).fetch1("movie")
        shifts = compute.phase_correlation_shifts(movie.values)
        corrected = compute.apply_shifts(movie.values, shifts)
        self.insert1(
            {
                **key,
                "shifts": xr.DataArray(
                    shifts,
                    dims=("time", "axis"),
                    coords={"time": movie["time"].values, "axis": ["y", "x"]},
                    name="shifts",
                ),
                "max_shift": int(np.abs(shifts).max()),
                "mean_image": _image(corrected.mean(axis=0).astype(np.float32), "mean_image"),
            }
        )


@schema
class SegmentationParams(dj.Lookup):
    definition = """
    seg_param_id : int16
    ---
    threshold : float32      # z-score of the std image that counts as cell
    min_pixels : int16       # smallest region kept as a cell
    """
    contents = [
        {"seg_param_id": 1, "threshold": 1.5, "min_pixels": 6},
        {"seg_param_id": 2, "threshold": 2.5, "min_pixels": 4},
    ]


@schema
class Segmentation(dj.Computed):
    definition = """
    -> MotionCorrection
    -> SegmentationParams
    ---
    n_cells : int16
    summary_image : <xarray@>  # float32 (y, x) z-scored std image
    masks : <xarray@>          # bool (cell, y, x), cell = cell_id
    """

    class Cell(dj.Part):
        definition = """
        -> master
        cell_id : int16
        ---
        n_pixels : int32
        center_row : float32
        center_col : float32
        """

    def make(self, key):
        params = (SegmentationParams & key).fetch1()
        corrected = _corrected_movie(key)
        summary, masks = compute.segment_cells(
            corrected, threshold=float(params["threshold"]), min_pixels=int(params["min_pixels"])
        )
        height, width = summary.shape
        stack = np.array(masks, dtype=bool).reshape(len(masks), height, width)
        self.insert1(
            {
                **key,
                "n_cells": len(masks),
                "summary_image": _image(summary, "summary_image"),
                "masks": xr.DataArray(
                    stack,
                    dims=("cell", "y", "x"),
                    coords={"cell": np.arange(1, len(masks) + 1, dtype=np.int16)},
                    name="masks",
                ),
            }
        )
        cells = []
        for cell_id, mask in enumerate(masks, start=1):
            rows, cols = np.nonzero(mask)
            cells.append(
                {
                    **key,
                    "cell_id": cell_id,
                    "n_pixels": int(mask.sum()),
                    "center_row": float(rows.mean()),
                    "center_col": float(cols.mean()),
                }
            )
        self.Cell.insert(cells)


@schema
class Traces(dj.Computed):
    definition = """
    -> Segmentation
    ---
    n_traces : int16
    traces : <xarray@>       # float32 (cell, time) mean fluorescence in each mask
    """

    class Trace(dj.Part):
        definition = """
        -> master
        -> Segmentation.Cell
        ---
        mean_f : float32     # the trace's mean fluorescence
        """

    def make(self, key):
        corrected = _corrected_movie(key)
        masks = (Segmentation & key).fetch1("masks")
        time = (ScanMovie & key).fetch1("movie")["time"].values
        traces = compute.extract_traces(corrected, list(masks.values))
        cells = masks["cell"].values
        self.insert1(
            {
                **key,
                "n_traces": len(cells),
                "traces": xr.DataArray(
                    traces.astype(np.float32),
                    dims=("cell", "time"),
                    coords={"cell": cells, "time": time},
                    name="traces",
                ),
            }
        )
        self.Trace.insert(
            {**key, "cell_id": int(c), "mean_f": float(trace.mean()) if trace.size else 0.0}
            for c, trace in zip(cells, traces)
        )


@schema
class CellStats(dj.Computed):
    definition = """
    -> Traces
    ---
    n_cells : int16
    mean_snr = null : float64
    mean_event_rate = null : float64   # events per second, over cells
    active_fraction : float64          # cells with at least one event
    """

    def make(self, key):
        frame_rate = float((Scan & key).fetch1("frame_rate"))
        traces = list((Traces & key).fetch1("traces").values)
        stats = [compute.cell_statistics(t, frame_rate) for t in traces]
        self.insert1(
            {
                **key,
                "n_cells": len(stats),
                "mean_snr": float(np.mean([s["snr"] for s in stats])) if stats else None,
                "mean_event_rate": float(np.mean([s["event_rate"] for s in stats])) if stats else None,
                "active_fraction": float(np.mean([s["event_rate"] > 0 for s in stats])) if stats else 0.0,
            }
        )
