"""Synthetic manual data for the reference pipeline, at a chosen scale."""

from __future__ import annotations

import datetime

from . import imaging  # noqa: F401  (declares the whole pipeline, not only acquisition)
from .acquisition import Mouse, Scan, Session

__all__ = ["SCALES", "insert_demo_data"]

#: Per scale: mice, sessions per mouse, scans per session, and each scan's size.
SCALES: dict[str, dict[str, int]] = {
    "small": {"mice": 2, "sessions": 2, "scans": 2, "n_frames": 120, "height": 48, "width": 48, "n_cells": 8},
    "medium": {"mice": 3, "sessions": 3, "scans": 3, "n_frames": 300, "height": 64, "width": 64, "n_cells": 14},
}


def insert_demo_data(scale: str = "small") -> int:
    """Insert mice, sessions and scans for ``scale``; existing rows are kept.

    Returns the number of scans the pipeline then holds for this scale.
    """
    try:
        size = SCALES[scale]
    except KeyError:
        raise ValueError(f"Unknown scale {scale!r}; choose one of {', '.join(SCALES)}.") from None
    mice = [
        {"mouse_id": m, "sex": "MF"[m % 2], "date_of_birth": datetime.date(2026, 1, 1 + m)}
        for m in range(1, size["mice"] + 1)
    ]
    sessions = [
        {"mouse_id": m["mouse_id"], "session_id": s, "session_date": datetime.date(2026, 6, s)}
        for m in mice
        for s in range(1, size["sessions"] + 1)
    ]
    scans = [
        {
            **{k: s[k] for k in ("mouse_id", "session_id")},
            "scan_id": i,
            "n_frames": size["n_frames"],
            "height": size["height"],
            "width": size["width"],
            "n_cells": size["n_cells"],
            "drift_px": 3,
            "frame_rate": 15.0,
        }
        for s in sessions
        for i in range(1, size["scans"] + 1)
    ]
    Mouse.insert(mice, skip_duplicates=True)
    Session.insert(sessions, skip_duplicates=True)
    Scan.insert(scans, skip_duplicates=True)
    return len(scans)
