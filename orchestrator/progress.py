"""Campaign progress for the terminal: one line per table.

On a terminal the current table's line is rewritten in place; elsewhere (a
log file, CI) each table gets one line when it finishes.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["TerminalProgress"]


class TerminalProgress:
    """Prints per-table progress to ``stream`` (default stderr)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._last = 0.0

    def started(self, dashboard_link: str | None) -> None:
        if self.enabled and dashboard_link:
            self.stream.write(f"Dask dashboard: {dashboard_link}\n")
            self.stream.flush()

    def _line(self, table: str, done: int, total: int, errors: int, seconds: float) -> str:
        rate = done / seconds if seconds > 0 else 0.0
        return f"  {table:<22} {done:>7}/{total:<7} errors {errors:<5} {rate:8.1f} keys/s"

    def update(self, table: str, done: int, total: int, errors: int, seconds: float) -> None:
        if not (self.enabled and self.tty):
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        self.stream.write("\r" + self._line(table, done, total, errors, seconds))
        self.stream.flush()

    def finish(self, table: str, done: int, total: int, errors: int, seconds: float) -> None:
        if not self.enabled:
            return
        prefix = "\r" if self.tty else ""
        self.stream.write(prefix + self._line(table, done, total, errors, seconds) + "\n")
        self.stream.flush()
