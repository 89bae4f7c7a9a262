"""Imaging: motion correction, segmentation, traces and per-cell statistics.

Arrays are xarray objects stored as Zarr (``<xarray@>``): shifts (time, axis),
images (y, x), masks (cell, y, x), traces (cell, time).  Fetching one opens it
lazily; ``.values`` reads it.

Each Computed table is written in DataJoint's three parts: ``make_fetch`` reads (the
database and the store), ``make_compute`` computes without either, ``make_insert``
writes.  By default a ``make()`` runs the three in one transaction, as most labs'
make()s run.  With ``djdask.demo.tripartite`` the tables have no ``make()`` of their
own: DataJoint's tripartite driver runs the parts (fetching twice, the second time in
the insert's transaction), and djdask can run ``make_compute`` on compute nodes that
cannot reach the database (a profile with ``database: none``).  ``make_fetch``
returns arrays packed as text (:func:`_packed`): DataJoint hashes what it returns,
to refuse an insert whose inputs changed, with deepdiff, which walks a NumPy array
element by element (seconds per million) and refuses raw bytes.
"""

from __future__ import annotations

import base64

import numpy as np
import xarray as xr

from . import compute
from .acquisition import Scan, ScanMovie
from .schemas import TRIPARTITE, dj
from .schemas import imaging as schema

__all__ = ["CellStats", "MotionCorrection", "Segmentation", "SegmentationParams", "Traces"]


def _one_transaction(cls: type) -> type:
    """Unless ``djdask.demo.tripartite``, give ``cls`` a make() that runs its three parts in
    one call (one transaction, one fetch)."""
    if not TRIPARTITE:

        def make(self, key):
            self.make_insert(key, *self.make_compute(key, *self.make_fetch(key)))

        cls.make = make
    return cls


def _packed(array: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    """An array as (base64 text, shape, dtype): what DataJoint's hash of fetched data reads fast."""
    array = np.ascontiguousarray(array)
    return base64.b64encode(array.tobytes()).decode("ascii"), tuple(int(n) for n in array.shape), str(array.dtype)


def _unpacked(packed: tuple[str, tuple[int, ...], str]) -> np.ndarray:
    text, shape, dtype = packed
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape).copy()


def _movie_and_shifts(key) -> tuple:
    """The scan's movie, its time coordinates and its motion-correction shifts, packed."""
    movie = (ScanMovie & key).fetch1("movie")
    shifts = (MotionCorrection & key).fetch1("shifts").values
    return _packed(movie.values), _packed(movie["time"].values), _packed(shifts)


def _image(array: np.ndarray, name: str) -> xr.DataArray:
    return xr.DataArray(array, dims=("y", "x"), name=name)


@schema
@_one_transaction
class MotionCorrection(dj.Computed):
    definition = """
    -> ScanMovie
    ---
    shifts : <xarray@>       # int16 (time, axis) estimated by phase correlation, axis = y, x
    max_shift : int16        # largest displacement found, in pixels
    mean_image : <xarray@>   # float32 (y, x) mean of the corrected movie
    """

    def make_fetch(self, key):
        movie = (ScanMovie & key).fetch1("movie")
        return _packed(movie.values), _packed(movie["time"].values)

    def make_compute(self, key, movie, time):
        movie = _unpacked(movie)
        shifts = compute.phase_correlation_shifts(movie)
        corrected = compute.apply_shifts(movie, shifts)
        return shifts, _unpacked(time), corrected.mean(axis=0).astype(np.float32)

    def make_insert(self, key, shifts, time, mean_image):
        self.insert1(
            {
                **key,
                "shifts": xr.DataArray(
                    shifts, dims=("time", "axis"), coords={"time": time, "axis": ["y", "x"]}, name="shifts"
                ),
                "max_shift": int(np.abs(shifts).max()),
                "mean_image": _image(mean_image, "mean_image"),
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
@_one_transaction
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

    def make_fetch(self, key):
        params = (SegmentationParams & key).fetch1()
        movie, _, shifts = _movie_and_shifts(key)
        return float(params["threshold"]), int(params["min_pixels"]), movie, shifts

    def make_compute(self, key, threshold, min_pixels, movie, shifts):
        corrected = compute.apply_shifts(_unpacked(movie), _unpacked(shifts))
        summary, masks = compute.segment_cells(corrected, threshold=threshold, min_pixels=min_pixels)
        height, width = summary.shape
        return summary, np.array(masks, dtype=bool).reshape(len(masks), height, width)

    def make_insert(self, key, summary, stack):
        self.insert1(
            {
                **key,
                "n_cells": len(stack),
                "summary_image": _image(summary, "summary_image"),
                "masks": xr.DataArray(
                    stack,
                    dims=("cell", "y", "x"),
                    coords={"cell": np.arange(1, len(stack) + 1, dtype=np.int16)},
                    name="masks",
                ),
            }
        )
        cells = []
        for cell_id, mask in enumerate(stack, start=1):
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
@_one_transaction
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

    def make_fetch(self, key):
        masks = (Segmentation & key).fetch1("masks")
        return (*_movie_and_shifts(key), _packed(masks.values), _packed(masks["cell"].values))

    def make_compute(self, key, movie, time, shifts, masks, cells):
        corrected = compute.apply_shifts(_unpacked(movie), _unpacked(shifts))
        traces = compute.extract_traces(corrected, list(_unpacked(masks)))
        return traces.astype(np.float32), _unpacked(cells), _unpacked(time)

    def make_insert(self, key, traces, cells, time):
        self.insert1(
            {
                **key,
                "n_traces": len(cells),
                "traces": xr.DataArray(
                    traces, dims=("cell", "time"), coords={"cell": cells, "time": time}, name="traces"
                ),
            }
        )
        self.Trace.insert(
            {**key, "cell_id": int(c), "mean_f": float(trace.mean()) if trace.size else 0.0}
            for c, trace in zip(cells, traces)
        )


@schema
@_one_transaction
class CellStats(dj.Computed):
    definition = """
    -> Traces
    ---
    n_cells : int16
    mean_snr = null : float64
    mean_event_rate = null : float64   # events per second, over cells
    active_fraction : float64          # cells with at least one event
    """

    def make_fetch(self, key):
        frame_rate = float((Scan & key).fetch1("frame_rate"))
        return frame_rate, _packed((Traces & key).fetch1("traces").values)

    def make_compute(self, key, frame_rate, traces):
        stats = [compute.cell_statistics(t, frame_rate) for t in _unpacked(traces)]
        return (
            len(stats),
            float(np.mean([s["snr"] for s in stats])) if stats else None,
            float(np.mean([s["event_rate"] for s in stats])) if stats else None,
            float(np.mean([s["event_rate"] > 0 for s in stats])) if stats else 0.0,
        )

    def make_insert(self, key, n_cells, mean_snr, mean_event_rate, active_fraction):
        self.insert1(
            {
                **key,
                "n_cells": n_cells,
                "mean_snr": mean_snr,
                "mean_event_rate": mean_event_rate,
                "active_fraction": active_fraction,
            }
        )
