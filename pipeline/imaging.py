"""Imaging: motion correction, segmentation, traces and per-cell statistics."""

from __future__ import annotations

import numpy as np

from . import compute
from .acquisition import Scan, ScanMovie
from .schemas import dj
from .schemas import imaging as schema

__all__ = ["CellStats", "MotionCorrection", "Segmentation", "SegmentationParams", "Traces"]


def _corrected_movie(key) -> np.ndarray:
    movie = (ScanMovie & key).fetch1("movie")
    shifts = (MotionCorrection & key).fetch1("shifts")
    return compute.apply_shifts(movie, shifts)


@schema
class MotionCorrection(dj.Computed):
    definition = """
    -> ScanMovie
    ---
    shifts : <blob>          # int16 (frames, 2) estimated by phase correlation
    max_shift : int16        # largest displacement found, in pixels
    mean_image : <blob>      # float32 mean of the corrected movie
    """

    def make(self, key):
        movie = (ScanMovie & key).fetch1("movie")
        shifts = compute.phase_correlation_shifts(movie)
        corrected = compute.apply_shifts(movie, shifts)
        self.insert1(
            {
                **key,
                "shifts": shifts,
                "max_shift": int(np.abs(shifts).max()),
                "mean_image": corrected.mean(axis=0).astype(np.float32),
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
    summary_image : <blob>   # float32 z-scored std image
    """

    class Cell(dj.Part):
        definition = """
        -> master
        cell_id : int16
        ---
        mask : <blob>        # bool (height, width)
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
        self.insert1({**key, "n_cells": len(masks), "summary_image": summary})
        cells = []
        for cell_id, mask in enumerate(masks, start=1):
            rows, cols = np.nonzero(mask)
            cells.append(
                {
                    **key,
                    "cell_id": cell_id,
                    "mask": mask,
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
    """

    class Trace(dj.Part):
        definition = """
        -> master
        -> Segmentation.Cell
        ---
        trace : <blob>       # float32 (frames,) mean fluorescence in the mask
        """

    def make(self, key):
        corrected = _corrected_movie(key)
        cells = (Segmentation.Cell & key).to_dicts(order_by="cell_id")
        traces = compute.extract_traces(corrected, [c["mask"] for c in cells])
        self.insert1({**key, "n_traces": len(cells)})
        self.Trace.insert(
            {**key, "cell_id": c["cell_id"], "trace": trace} for c, trace in zip(cells, traces)
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
        traces = [row["trace"] for row in (Traces.Trace & key).to_dicts(order_by="cell_id")]
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
