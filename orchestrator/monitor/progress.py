"""Campaign progress: the state a campaign publishes, the board that turns a
sequence of states into counts, rates and ETAs, and the terminal's lines.

The campaign publishes its state to the schedulers (the dashboard's campaign
page, :mod:`djdask.monitor.dashboard`) under :data:`METADATA_KEY`; the page and
the terminal read it through a :class:`CampaignBoard` each.

On a terminal the block of lines is redrawn in place a few times a second;
elsewhere (a log file, CI, a batch job's output) a plain block is printed every
``interval`` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TextIO

from djdask.worker.executor import RUNNING_METRIC

if TYPE_CHECKING:
    from djdask.monitor.links import Links

__all__ = [
    "METADATA_KEY",
    "CampaignBoard",
    "TerminalProgress",
    "format_eta",
    "format_rows",
    "longest_running",
    "sliding_rates",
]


def longest_running(workers: Any, limit: int = 10, now: float | None = None) -> list[dict[str, Any]]:
    """The keys running longest on ``workers`` (the scheduler's worker states), from each
    worker's :data:`~djdask.worker.executor.RUNNING_METRIC`: table, key, worker and seconds, longest first."""
    now = time.time() if now is None else now
    running = []
    for ws in workers:
        current = (getattr(ws, "metrics", None) or {}).get(RUNNING_METRIC)
        if current:
            running.append({**current, "worker": ws.address, "seconds": max(0.0, now - float(current["since"]))})
    return sorted(running, key=lambda r: -r["seconds"])[:limit]


#: Scheduler metadata key (``Client.set_metadata``) of a campaign's published state.
METADATA_KEY = "djdask"
#: Where a campaign puts the recent campaigns of its pipeline (from the records) for the page.
HISTORY_KEY = "djdask-history"
#: Points of the throughput timeline a board keeps; when full, every other one goes and the
#: spacing doubles, so that a campaign of days keeps its whole course in bounded memory.
TIMELINE_POINTS = 360

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


class CampaignBoard:
    """Per-table counts, throughput and ETA from a sequence of published states.

    Parameters
    ----------
    window : float
        Seconds of history a rate is measured over: long enough to smooth the
        batches in which keys finish, short enough to follow a change of pace.

    A state is the dict a campaign publishes (:meth:`StatePublisher.state <djdask.monitor.publisher.StatePublisher.state>`): ``time``
    (seconds since the epoch), ``campaign`` (``id``, ``module``, ``host``,
    ``pid``, ``user``, ``started``, ``finished``, ``cancelled``), ``tables`` (per
    table ``table``, ``parents``, ``depth``, ``rows``, ``made``, ``errors``,
    ``in_flight``, ``pending``, ``seconds``) and ``errors``.
    """

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self.state: dict[str, Any] | None = None
        self._history: deque[tuple[float, dict[str, int]]] = deque()
        self.timeline: list[tuple[float, dict[str, int]]] = []  # keys finished per table, over the campaign
        # Beside each timeline point: the keys a following campaign's looks had found by then (None: not following).
        self.found: list[int | None] = []
        self._stride = 1.0  # seconds between timeline points

    def update(self, state: dict[str, Any] | None) -> bool:
        """Take a published state; False when there is none or it is not newer."""
        if not state or "tables" not in state:
            return False
        if self.state is not None:
            if state["campaign"].get("id") != self.state["campaign"].get("id"):
                self._history.clear()  # a new campaign on this scheduler
                self.timeline.clear()
                self.found.clear()
                self._stride = 1.0
            elif state["time"] <= self.state["time"]:
                return False
        self.state = state
        now = state["time"]
        counts = {t["table"]: t["made"] + t["errors"] for t in state["tables"]}
        self._history.append((now, counts))
        if not self.timeline or now - self.timeline[-1][0] >= self._stride or state["campaign"].get("finished"):
            self.timeline.append((now, counts))
            self.found.append((state.get("following") or {}).get("enqueued"))
            if len(self.timeline) > TIMELINE_POINTS:
                self.timeline, self.found = self.timeline[::2], self.found[::2]
                self._stride *= 2
        # Keep one entry at least `window` old, as the start of the rate's span.
        while len(self._history) > 2 and self._history[1][0] <= now - self.window:
            self._history.popleft()
        return True

    @property
    def finished(self) -> bool:
        return bool(self.state and self.state["campaign"].get("finished"))

    def rows(self) -> list[dict[str, Any]]:
        """One row per table: counts, ``rate`` (keys finished per second), ``eta``
        (seconds, None when unknown or nothing is left) and ``fraction`` done."""
        if self.state is None:
            return []
        now = self.state["time"]
        since, before = self._history[0]
        span = now - since
        rows = []
        for t in self.state["tables"]:
            finished_keys = t["made"] + t["errors"]
            if not self.finished and span >= 1.0:
                rate = max(0, finished_keys - before.get(t["table"], 0)) / span
            else:  # the campaign is over, or too young for a span: its average
                rate = finished_keys / t["seconds"] if t["seconds"] > 0 else 0.0
            left = t["pending"] + t["in_flight"]
            total = finished_keys + left
            rows.append(
                {
                    "table": t["table"],
                    # The server's estimate for a huge table (not counted at the start): "~12,000,000".
                    "rows": f"~{t['rows']:,}" if t.get("rows_estimated") else t["rows"],
                    "done": t["made"],
                    "in_flight": t["in_flight"],
                    "pending": t["pending"],
                    "errors": t["errors"],
                    "rate": rate,
                    "eta": left / rate if rate > 0 and left and not self.finished else None,
                    "fraction": t["made"] / total if total else (1.0 if self.finished else 0.0),
                }
            )
        return rows

    def throughput(self) -> dict[str, tuple[list[float], list[float]]]:
        """Per table, keys finished per second over the campaign: (minutes since it started,
        rate over the ``window`` seconds ending there, :func:`sliding_rates`), so that the
        batches in which keys finish show as a steady rate, not as bursts."""
        if self.state is None or len(self.timeline) < 2:
            return {}
        started = self.state["campaign"].get("started") or self.timeline[0][0]
        times = [t for t, _ in self.timeline]
        minutes = [(t - started) / 60 for t in times[1:]]
        return {
            t["table"]: (minutes, sliding_rates(times, [c.get(t["table"], 0) for _, c in self.timeline], self.window))
            for t in self.state["tables"]
        }

    def arrivals(self) -> dict[str, list[float]] | None:
        """A following campaign's course: ``minutes`` since it started, the keys its looks had
        ``found`` (enqueued after its first sweep) and the keys ``made`` (finished, all tables)
        by then; None for a campaign that does not follow."""
        if self.state is None or not self.state.get("following"):
            return None
        started = self.state["campaign"].get("started") or (self.timeline[0][0] if self.timeline else 0.0)
        points = [(t, f, sum(c.values())) for (t, c), f in zip(self.timeline, self.found) if f is not None]
        return {
            "minutes": [(t - started) / 60 for t, _, _ in points],
            "found": [f for _, f, _ in points],
            "made": [m for _, _, m in points],
        }

    def durations(self) -> dict[str, list[list[float]]]:
        """Per table, the make() duration histogram the campaign published: ``[from, to, count]``."""
        if self.state is None:
            return {}
        return {t["table"]: t["durations"] for t in self.state["tables"] if t.get("durations")}

    def layout(self) -> dict[str, tuple[float, float]]:
        """Node positions of the DAG, in layers: x by depth, y by order within a depth, each
        layer ordered by where its tables' parents are (their mean position), so that
        edges run mostly level and cross less (a pass of the barycenter heuristic)."""
        if self.state is None:
            return {}
        layers: dict[int, list[dict[str, Any]]] = {}
        for t in self.state["tables"]:
            layers.setdefault(t.get("depth", 0), []).append(t)
        positions: dict[str, tuple[float, float]] = {}
        for depth in sorted(layers):

            def parents_at(t: dict[str, Any]) -> float:
                ys = [positions[p][1] for p in t.get("parents", ()) if p in positions]
                return -sum(ys) / len(ys) if ys else 0.0  # y runs down from 0: sort by -y

            for i, t in enumerate(sorted(layers[depth], key=parents_at)):  # stable: ties keep their order
                positions[t["table"]] = (float(depth), -float(i))
        return positions

    def edges(self) -> list[tuple[str, str]]:
        if self.state is None:
            return []
        names = {t["table"] for t in self.state["tables"]}
        return [(p, t["table"]) for t in self.state["tables"] for p in t.get("parents", ()) if p in names]

    def errors(self) -> list[dict[str, Any]]:
        """The latest errors, newest first."""
        return list(reversed(self.state.get("errors", []))) if self.state else []

    def json(self) -> dict[str, Any]:
        return {
            "campaign": self.state["campaign"] if self.state else None,
            "notice": self.state.get("notice") if self.state else None,
            "following": self.state.get("following") if self.state else None,
            "tables": self.rows(),
            "edges": self.edges(),
            "errors": self.errors(),
            "throughput": self.throughput(),
            "durations": self.durations(),
        }


def sliding_rates(times: list[float], counts: list[float], window: float) -> list[float]:
    """The rate of a cumulative ``counts`` at each of ``times`` but the first, over the
    ``window`` seconds before it (fewer at the start): ``(count now - count then) / span``,
    the count ``window`` seconds ago interpolated between its neighbouring points.

    Keys finish in batches, so rates between consecutive points jump between nothing and a
    batch's worth; over a window of several batches they read as the pace of the work.
    Where the points lie further apart than ``window`` (a long campaign's thinned timeline),
    the rate is that between neighbours.
    """
    rates = []
    j = -1  # the last point at or before the window's start
    for i in range(1, len(times)):
        start = times[i] - window
        while j + 1 < i and times[j + 1] <= start:
            j += 1
        if j < 0:  # the window reaches back past the first point: from there
            t0, c0 = times[0], counts[0]
        else:  # the count at the window's start, between the points on either side of it
            ta, tb, ca, cb = times[j], times[j + 1], counts[j], counts[j + 1]
            t0, c0 = start, (ca + (cb - ca) * (start - ta) / (tb - ta) if tb > ta else ca)
        span = times[i] - t0
        rates.append(max(0.0, counts[i] - c0) / span if span > 0 else 0.0)
    return rates


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

    def started(self, links: Links, scheduler: str | None = None, campaign: str | None = None) -> None:
        """The campaign's first lines: its id, its scheduler (on a profile), and ``links``, the
        addresses where its web pages answer (:mod:`djdask.monitor.links`)."""
        if self.enabled and campaign:
            self.stream.write(f"Campaign:       {campaign} (djdask cancel {campaign} stops it from any machine)\n")
        if self.enabled and links.lines():
            if scheduler:
                secure = "TLS, only this campaign's credentials" if scheduler.startswith("tls://") else "plain TCP"
                self.stream.write(f"Scheduler:      {scheduler} ({secure})\n")
            for line in links.lines():
                self.stream.write(line + "\n")
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
