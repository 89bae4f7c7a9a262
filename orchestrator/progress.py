"""Campaign progress on the terminal: one line per table.

On a terminal the block of lines is redrawn in place a few times a second;
elsewhere (a log file, CI, a batch job's output) a plain block is printed every
``interval`` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["TerminalProgress", "format_eta", "format_rows"]

_HEADER = f"  {'table':<22} {'done':>8} {'in flight':>9} {'pending':>8} {'errors':>7} {'keys/s':>8} {'ETA':>8}"


def format_eta(seconds: float | None) -> str:
    """Seconds as ``42s``, ``3m05s`` or ``2h10m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The progress block: a header and one line per table."""
    lines = [_HEADER]
    for r in rows:
        lines.append(
            f"  {r['table']:<22} {r['done']:>8} {r['in_flight']:>9} {r['pending']:>8} {r['errors']:>7} "
            f"{r['rate']:>8.1f} {format_eta(r['eta']):>8}"
        )
    return lines


class TerminalProgress:
    """Prints per-table progress to ``stream`` (default stderr).

    Parameters
    ----------
    stream : file, optional
    enabled : bool
        False for a silent campaign (the Python API's default).
    interval : float
        Seconds between plain blocks when ``stream`` is not a terminal.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._drawn = 0
        self._last = time.monotonic()

    def started(self, dashboard_link: str | None, page_link: str | None = None) -> None:
        if self.enabled and dashboard_link:
            self.stream.write(f"Dask dashboard: {dashboard_link}\n")
            if page_link:
                self.stream.write(f"Campaign page:  {page_link}\n")
            self.stream.flush()

    def _draw(self, rows: list[dict[str, Any]]) -> None:
        lines = format_rows(rows)
        if self.tty and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")  # back to the block's first line
        for line in lines:
            self.stream.write(("\x1b[2K" if self.tty else "") + line + "\n")
        self._drawn = len(lines) if self.tty else 0
        self.stream.flush()

    def update(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < (0.2 if self.tty else self.interval):
            return
        self._last = now
        self._draw(rows)

    def finish(self, rows: list[dict[str, Any]]) -> None:
        if self.enabled:
            self._draw(rows)
