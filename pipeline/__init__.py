"""The reference pipeline: a calcium-imaging pipeline on synthetic data.

Shaped like the calcium-imaging example in DataJoint's documentation::

    Mouse -> Session -> Scan                      (Manual)
                         -> ScanMovie             (Imported: a synthetic movie)
                         -> MotionCorrection      (Computed: phase correlation)
    SegmentationParams   -> Segmentation (+Cell)  (Lookup, Computed)
                         -> Traces (+Trace)       (Computed)
                         -> CellStats             (Computed)

Every ``make()`` is a real numpy computation, deterministic given its key and
the rows it reads, so two runs of the pipeline, by djdask or by DataJoint's own
``populate()``, produce identical rows.  Array sizes come from the ``Scan``
rows, which :func:`djdask.pipeline.demo.insert_demo_data` fills for a chosen scale.

The schema names start with the dask-config value ``djdask.demo.schema-prefix``
(``DASK_DJDASK__DEMO__SCHEMA_PREFIX``), so that tests and benchmarks can keep
several copies of the pipeline side by side.
"""

from __future__ import annotations

import importlib

# The tables live in submodules that connect to the database when imported;
# importing them lazily keeps ``pipeline.compute`` usable without a database.
_TABLES = {
    "Mouse": "acquisition",
    "Session": "acquisition",
    "Scan": "acquisition",
    "ScanMovie": "acquisition",
    "MotionCorrection": "imaging",
    "SegmentationParams": "imaging",
    "Segmentation": "imaging",
    "Traces": "imaging",
    "CellStats": "imaging",
}


def __getattr__(name: str):
    if name in _TABLES:
        return getattr(importlib.import_module(f".{_TABLES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CellStats",
    "MotionCorrection",
    "Mouse",
    "Scan",
    "ScanMovie",
    "Segmentation",
    "SegmentationParams",
    "Session",
    "Traces",
]
