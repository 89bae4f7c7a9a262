"""The campaign page of the Dask dashboard (``/djdask``) and the data behind it.

A campaign publishes its state to the scheduler of each of its pools about once
a second, with ``Client.set_metadata("djdask", state)``: per table the rows, the
keys made, in flight, pending and failed, the edges of the DAG, and the latest
errors (with every known secret masked).  :class:`DashboardPlugin`, a scheduler
plugin that the campaign registers, reads that state into a
:class:`CampaignBoard` and serves the page next to Dask's own: the DAG with each
table coloured by its progress, counts with throughput and ETA, and the latest
errors.  Registering a plugin works the same for a scheduler in the campaign's
process (LocalCluster, dask-jobqueue) and for one elsewhere (a running
scheduler, Kubernetes), as long as djdask is installed where the scheduler runs.
``/djdask/state.json`` serves the same rows as JSON, ``/djdask/health`` whether the
campaign is alive (:mod:`djdask.monitor.health`), and the scheduler's ``/metrics`` adds
the campaign's Prometheus metrics to Dask's (:mod:`djdask.monitor.metrics`); these three
also where Dask's dashboard is off.

The counts, rates and ETAs come from :class:`~djdask.monitor.progress.CampaignBoard`,
the same data source the campaign's terminal progress reads.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import time
from typing import Any

from dask.utils import format_bytes, format_time
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback

from djdask.db.clock import utc_text
from djdask.monitor.health import following_line, health_verdict
from djdask.monitor.links import PAGE
from djdask.monitor.metrics import CampaignCollector
from djdask.monitor.plots import arrivals_figure, history_data, history_figures
from djdask.monitor.progress import HISTORY_KEY, METADATA_KEY, CampaignBoard, format_eta, longest_running

__all__ = ["DashboardPlugin", "fill_colour", "report_html"]

logger = logging.getLogger(__name__)

BOKEH_REQUIREMENT = "bokeh>=3.1"

# Fill colours: a table's fill goes from _EMPTY to _DONE with its fraction done.
_EMPTY = (0xE6, 0xE6, 0xE6)
_DONE = (0x4C, 0xAF, 0x50)
_RUNNING_LINE = "#1f77b4"
_ERROR_LINE = "#d62728"


def fill_colour(fraction: float) -> str:
    f = min(1.0, max(0.0, fraction))
    r, g, b = (round(a + (z - a) * f) for a, z in zip(_EMPTY, _DONE))
    return f"#{r:02x}{g:02x}{b:02x}"


def _header_html(board: CampaignBoard) -> str:
    if board.state is None:
        return (
            "<h2>djdask</h2><p>No djdask campaign has published to this scheduler yet. Start one with "
            "<code>djdask populate MODULE</code> (with <code>--cluster</code> for this scheduler's workers); "
            "its tables appear here within a second.</p>"
        )
    c = board.state["campaign"]
    status = "stopped" if c.get("cancelled") else "finished" if c.get("finished") else "running"
    elapsed = board.state["time"] - c.get("started", board.state["time"])
    e = html.escape
    notice = board.state.get("notice")
    warning = f'<p style="color:#d62728"><b>{e(notice)}</b></p>' if notice else ""
    following = following_line(board.state.get("following"), finished=status != "running")
    follow = f'<p class="djdask-following">{e(following)}</p>' if following else ""
    return (
        f"<h2>djdask campaign: {e(str(c.get('module')))} <small>({status})</small></h2>{warning}{follow}"
        f"<p>{e(str(c.get('user')))}@{e(str(c.get('host')))}, pid {e(str(c.get('pid')))}, "
        f"{'ran' if status != 'running' else 'running'} for {format_eta(elapsed)}. Same counts from the database: "
        f"<code>djdask status {e(str(c.get('module')))}</code>.</p>"
    )


def _counts_html(rows: list[dict[str, Any]]) -> str:
    e = html.escape
    head = ["table", "rows", "made", "in flight", "pending", "errors", "keys/s", "ETA", "progress"]
    lines = [
        '<table class="djdask-counts" style="border-collapse:collapse;font-size:14px">',
        "<tr>" + "".join(f'<th style="text-align:left;padding:2px 10px">{h}</th>' for h in head) + "</tr>",
    ]
    for r in rows:
        bar = (
            f'<div style="width:120px;height:10px;background:#eee"><div style="width:{r["fraction"] * 100:.0f}%;'
            f'height:10px;background:{fill_colour(1.0)}"></div></div>'
        )
        cells = [
            e(r["table"]),
            r["rows"],
            r["done"],
            r["in_flight"],
            r["pending"],
            r["errors"],
            f"{r['rate']:.1f}",
            format_eta(r["eta"]),
            bar,
        ]
        style = ' style="color:#d62728"' if r["errors"] else ""
        lines.append(
            f'<tr data-table="{e(r["table"])}"{style}>'
            + "".join(f'<td style="padding:2px 10px">{c}</td>' for c in cells)
            + "</tr>"
        )
    lines.append("</table>")
    return "".join(lines)


def _errors_html(board: CampaignBoard, shown: int = 10) -> str:
    errors = board.errors()
    if not errors:
        return "<h3>Latest errors</h3><p>None.</p>"
    e = html.escape
    module = e(str(board.state["campaign"].get("module")))
    parts = [f"<h3>Latest errors</h3><p>Newest first; all of them: <code>djdask errors {module}</code>.</p>"]
    for err in errors[:shown]:
        parts.append(
            f'<div class="djdask-error"><b>{e(err["table"])}</b> <code>{e(err["key"])}</code>: '
            f'{e(err["message"])}<pre style="font-size:12px;margin:2px 0 10px 0">'
            f"{e(err.get('traceback') or '')}</pre></div>"
        )
    return "".join(parts)


def _running_html(running: list[dict[str, Any]]) -> str:
    if not running:
        return "<h3>Longest-running keys</h3><p>None running.</p>"
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(r.get('table')))}</td><td><code>{e(str(r.get('key')))}</code></td>"
        f"<td>{e(str(r.get('worker')))}</td><td>{format_eta(r['seconds'])}</td></tr>"
        for r in running
    )
    return (
        "<h3>Longest-running keys</h3><table><tr><th>table</th><th>key</th><th>worker</th><th>running for</th></tr>"
        f"{rows}</table>"
    )


def _history_html(history: list[dict[str, Any]] | None, board: CampaignBoard | None = None) -> str:
    """Recent campaigns of the pipeline, from the records, each linking to its report; the one
    this page shows has its live state and counts (its record is renewed less often)."""
    if not history:
        return "<h3>Recent campaigns</h3><p>None recorded yet.</p>"
    e = html.escape
    if board is not None and board.state is not None:
        c, rows = board.state["campaign"], board.rows()
        live = {
            "state": "cancelled" if c.get("cancelled") else "finished" if c.get("finished") else "running",
            "keys_made": sum(r["done"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
        }
        history = [{**r, **live} if r.get("campaign") == c.get("id") else r for r in history]
    head = ["campaign", "state", "user", "host", "started", "made", "errors", "code"]
    rows = "".join(
        f'<tr><td><a href="{PAGE}/campaigns/{e(str(r["campaign"]))}">{e(str(r["campaign"]))}</a></td>'
        + "".join(f"<td>{e(str(r.get(k)))}</td>" for k in ("state", "user", "host"))
        + f"<td>{e(utc_text(r.get('started'), zone=' UTC'))}</td>"
        + "".join(f"<td>{e(str(r.get(k)))}</td>" for k in ("keys_made", "errors"))
        + f"<td>{e(str(r.get('code_version') or '-'))}</td></tr>"
        for r in history
    )
    return (
        '<h3>Recent campaigns</h3><table class="djdask-history"><tr>'
        + "".join(f'<th style="text-align:left;padding:2px 10px">{h}</th>' for h in head)
        + f"</tr>{rows}</table>"
    )


def report_html(record: dict[str, Any]) -> str:
    """A campaign's report (as ``djdask report`` prints it) as a page."""
    e = html.escape
    account = record.get("accounting") or {}
    parts = [
        f"<h2>djdask campaign {e(str(record['campaign']))} of {e(str(record['module']))}: "
        f"{e(str(record['state']))}</h2>",
        f"<p>{e(str(record['user']))} on {e(str(record['host']))}, pid {e(str(record['pid']))}; started "
        f"{e(utc_text(record['started'], zone=' UTC'))}, ended "
        f"{e(utc_text(record.get('ended'), zone=' UTC'))}; exit code "
        f"{e(str(record.get('exit_code')))}; code {e(str(record.get('code_version') or '-'))}; controllers "
        f"{e(str(record.get('controllers')))}. In a terminal: <code>djdask report {e(str(record['campaign']))}"
        "</code>.</p>",
        '<table class="djdask-report"><tr><th>table</th><th>made</th><th>errors</th><th>retries</th><th>busy</th>'
        "<th>make() min / p50 / p95 / max</th><th>peak memory</th></tr>",
    ]
    for t in account.get("tables") or []:
        m = t.get("make_seconds") or {}
        timing = " / ".join("-" if m.get(k) is None else format_time(m[k]) for k in ("min", "p50", "p95", "max"))
        parts.append(
            f'<tr data-table="{e(t["table"])}"><td>{e(t["table"])}</td><td>{t.get("made")}</td>'
            f"<td>{t.get('errors')}</td><td>{t.get('retries')}</td><td>{format_time(t.get('busy_seconds') or 0)}</td>"
            f"<td>{timing}</td><td>{format_bytes(t.get('peak_memory') or 0)}</td></tr>"
        )
    parts.append(
        "</table><table><tr><th>pool</th><th>profile</th><th>worker time</th><th>busy</th><th>idle</th>"
        "<th>jobs</th><th>node-hours requested</th></tr>"
    )
    for p in account.get("pools") or []:
        parts.append(
            f"<tr><td>{e(str(p['pool']))}</td><td>{e(str(p.get('profile')))}</td>"
            f"<td>{format_time(p.get('worker_seconds') or 0)}</td><td>{format_time(p.get('busy_seconds') or 0)}</td>"
            f"<td>{format_time(p.get('idle_seconds') or 0)}</td><td>{p.get('jobs_submitted', '-')}</td>"
            f"<td>{p.get('node_hours_requested', '-')}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


#: The pipeline plot: its least height, the pixels per table of a layer and the most
#: tables and layers (depths) it frames at first; a bigger pipeline is panned and zoomed.
DAG_MIN_HEIGHT = 260
DAG_ROW_PIXELS = 46
DAG_ROWS = 16
DAG_COLUMNS = 8


def frame_dag(fig: Any, pos: dict[str, tuple[float, float]]) -> None:
    """Size the pipeline plot and frame its first layers and rows, so that table names stay
    legible at 200 tables (11 px labels, at least DAG_ROW_PIXELS per row); the reset tool
    returns here."""
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    rows = min(DAG_ROWS, int(max(ys) - min(ys)) + 1)
    fig.height = max(DAG_MIN_HEIGHT, rows * DAG_ROW_PIXELS + 60)
    x0, y0 = min(xs) - 0.6, max(ys) + 0.6
    x1, y1 = min(max(xs), min(xs) + DAG_COLUMNS - 1) + 0.6, y0 - rows - 0.2
    fig.x_range.update(start=x0, end=x1, reset_start=x0, reset_end=x1)
    fig.y_range.update(start=y1, end=y0, reset_start=y1, reset_end=y0)


def campaign_doc(plugin: DashboardPlugin, scheduler: Any, extra: dict, doc: Any) -> None:
    """The Bokeh document of the page (one per browser session)."""
    # lazy: bokeh (1.2 s), perhaps missing where the scheduler runs (the page then says so)
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, Div, HoverTool, LabelSet, Range1d
    from bokeh.plotting import figure

    board = plugin.board
    header, counts, running, errors, history = (Div(sizing_mode="stretch_width") for _ in range(5))
    throughput, rates, durations, spread = history_figures(board)
    arrivals, arrived = arrivals_figure()
    nodes = ColumnDataSource(
        {k: [] for k in ("x", "y", "table", "label", "fill", "line", "made", "pending", "in_flight", "errors", "eta")}
    )
    links = ColumnDataSource({"xs": [], "ys": []})
    fig = figure(
        name="djdask-dag",
        height=DAG_MIN_HEIGHT,
        sizing_mode="stretch_width",
        toolbar_location="right",
        tools="pan,wheel_zoom,box_zoom,reset",
        active_drag="pan",
        active_scroll="wheel_zoom",
        x_range=Range1d(-0.6, 0.6),
        y_range=Range1d(-0.6, 0.6),
        title="Pipeline (drag to pan, scroll to zoom)",
    )
    shown: dict[str, Any] = {"layout": None}
    fig.axis.visible = False
    fig.grid.visible = False
    fig.multi_line("xs", "ys", source=links, line_color="#999999", line_width=1.5)
    boxes = fig.rect("x", "y", width=0.8, height=0.6, source=nodes, fill_color="fill", line_color="line", line_width=2)
    fig.add_layout(
        LabelSet(
            x="x", y="y", text="label", source=nodes, text_align="center", text_baseline="middle", text_font_size="11px"
        )
    )
    fig.add_tools(
        HoverTool(
            renderers=[boxes],
            tooltips=[
                ("table", "@table"),
                ("made", "@made"),
                ("in flight", "@in_flight"),
                ("pending", "@pending"),
                ("errors", "@errors"),
                ("ETA", "@eta"),
            ],
        )
    )

    def update() -> None:
        plugin.poll(scheduler)
        rows = board.rows()
        header.text = _header_html(board)
        counts.text = _counts_html(rows)
        errors.text = _errors_html(board)
        running.text = _running_html(longest_running(scheduler.workers.values()))
        history.text = _history_html(scheduler.task_metadata.get(HISTORY_KEY), board)
        rates.data, spread.data = history_data(board)
        course = board.arrivals()
        arrivals.visible = course is not None
        if course is not None:
            arrived.data = course
        pos = board.layout()
        if not rows:
            return
        nodes.data = {
            "x": [pos[r["table"]][0] for r in rows],
            "y": [pos[r["table"]][1] for r in rows],
            "table": [r["table"] for r in rows],
            "label": [
                f"{r['table']}\n{r['done']}/{r['done'] + r['in_flight'] + r['pending'] + r['errors']}" for r in rows
            ],
            "fill": [fill_colour(r["fraction"]) for r in rows],
            "line": [_ERROR_LINE if r["errors"] else _RUNNING_LINE if r["in_flight"] else "#777777" for r in rows],
            "made": [r["done"] for r in rows],
            "pending": [r["pending"] for r in rows],
            "in_flight": [r["in_flight"] for r in rows],
            "errors": [r["errors"] for r in rows],
            "eta": [format_eta(r["eta"]) for r in rows],
        }
        links.data = {
            "xs": [[pos[a][0] + 0.4, pos[b][0] - 0.4] for a, b in board.edges()],
            "ys": [[pos[a][1], pos[b][1]] for a, b in board.edges()],
        }
        if pos != shown["layout"]:  # a new pipeline: frame it; else keep the reader's pan and zoom
            shown["layout"] = pos
            frame_dag(fig, pos)

    update()
    doc.add_periodic_callback(update, 1000)
    doc.add_root(
        column(
            header, fig, counts, arrivals, throughput, durations, running, errors, history, sizing_mode="stretch_width"
        )
    )
    doc.title = "Dask: djdask campaign"
    try:  # the dashboard's own page frame (navigation bar) and theme
        from distributed.dashboard.components.scheduler import BOKEH_THEME, env  # lazy: bokeh, as above

        doc.template = env.get_template("simple.html")
        doc.template_variables.update(extra)
        doc.theme = BOKEH_THEME
    except ImportError:
        pass


class DashboardPlugin(SchedulerPlugin):
    """Serves the campaign page on the scheduler's dashboard; see the module docstring.

    Registered by each campaign on each of its pools' schedulers; a scheduler
    that has it already keeps it (``idempotent``), and a new campaign's state
    replaces the previous one's on the same page.
    """

    name = "djdask-dashboard"
    idempotent = True

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.board = CampaignBoard()
        self.scheduler: Any = None  # while started: the metrics' collector reads its workers
        self.received: float | None = None  # when the latest state arrived (time.monotonic), for /djdask/health
        self._callback = None

    def __getstate__(self) -> dict:
        return {"interval": self.interval}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["interval"])

    def poll(self, scheduler: Any) -> None:
        """Take the latest published state into the board."""
        if self.board.update(scheduler.task_metadata.get(METADATA_KEY)):
            self.received = time.monotonic()

    def health(self, scheduler: Any) -> tuple[int, dict[str, Any]]:
        """The campaign's health from its last published state: :func:`djdask.monitor.health.health_verdict`."""
        self.poll(scheduler)
        age = None if self.received is None else time.monotonic() - self.received
        return health_verdict(self.board.state, age=age, now=time.time())

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._callback = PeriodicCallback(lambda: self.poll(scheduler), self.interval * 1000)
        self._callback.start()
        try:  # the campaign's metrics beside Dask's on /metrics
            CampaignCollector.register(self)
        except Exception as err:  # metrics we cannot add must not stop the scheduler
            logger.warning("djdask: could not add the campaign's metrics to /metrics: %s", err)
        if getattr(scheduler, "http_application", None) is None:
            return  # no HTTP server: the state is still in the scheduler's metadata
        try:
            self._add_page(scheduler)
        except Exception as err:  # a page we cannot add must not stop the scheduler
            logger.warning("djdask: could not add the campaign page to the dashboard: %s", err)

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
        self.scheduler = None

    def _add_page(self, scheduler: Any) -> None:
        plugin = self
        prefix = "/"
        for app in scheduler.http_application.applications:  # Dask's own Bokeh pages, if any
            prefix = getattr(app, "prefix", None) or prefix
        base = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"

        class State(web.RequestHandler):
            def get(self) -> None:
                plugin.poll(scheduler)
                self.set_header("Content-Type", "application/json")
                state = {**plugin.board.json(), "running": longest_running(scheduler.workers.values())}
                self.write(json.dumps(state, default=str))

        class Health(web.RequestHandler):
            def get(self) -> None:
                status, body = plugin.health(scheduler)
                self.set_status(status)
                self.set_header("Content-Type", "application/json")
                self.set_header("Cache-Control", "no-store")
                self.write(json.dumps(body))

        class Report(web.RequestHandler):
            def get(self, campaign: str) -> None:
                history = scheduler.task_metadata.get(HISTORY_KEY) or []
                found = [r for r in history if r.get("campaign") == campaign]
                if not found:
                    self.set_status(404)
                    self.write(
                        f"<p>Campaign {html.escape(campaign)} is not among the recent ones: "
                        f"<code>djdask report {html.escape(campaign)}</code> reads it from the database.</p>"
                    )
                    return
                self.write(report_html(found[0]))

        handlers: list[tuple] = [
            (rf"{base}{PAGE}/state\.json", State),
            (rf"{base}{PAGE}/health", Health),
            (rf"{base}{PAGE}/campaigns/([0-9a-f]+)", Report),
        ]
        if not scheduler.http_application.applications and importlib.util.find_spec("bokeh") is not None:
            # Dask's dashboard is off here (djdask.campaign.dask-dashboard: false, or `dask scheduler
            # --no-dashboard`): the page is its JSON, and Bokeh is not loaded for it.
            handlers.append((rf"{base}{PAGE}/?", _NoPage, {"why": _DASHBOARD_OFF}))
            scheduler.http_application.add_handlers(r".*", handlers)
            return
        try:
            # lazy: bokeh (1.2 s), perhaps missing where the scheduler runs (the page then says so)
            from distributed.dashboard.core import BokehApplication
            from distributed.dashboard.scheduler import template_variables
        except ImportError:
            handlers.append((rf"{base}{PAGE}/?", _NoPage, {"why": _MISSING_BOKEH}))
            scheduler.http_application.add_handlers(r".*", handlers)
            return
        scheduler.http_application.add_handlers(r".*", handlers)
        variables = template_variables(scheduler)
        if PAGE not in variables["pages"]:
            variables["pages"].append(PAGE)  # the dashboard's navigation bar links to the page
        app = BokehApplication(
            {f"/{PAGE}": lambda s, extra, doc: campaign_doc(plugin, s, extra, doc)},
            scheduler,
            prefix=prefix,
            template_variables=variables,
        )
        scheduler.http_application.add_application(app)
        app.initialize(IOLoop.current())
        app.start()


class _NoPage(web.RequestHandler):
    """The page where the campaign page cannot be drawn: ``why`` says why and what to do; the
    campaign's counts are still served as JSON."""

    def initialize(self, why: str) -> None:
        self.why = why

    def get(self) -> None:
        # Relative, so that it also works behind a proxy's path prefix; from ".../djdask/" too.
        state_link = "state.json" if self.request.path.endswith("/") else f"{PAGE}/state.json"
        self.write(
            f"<h2>djdask campaign page</h2>{self.why}"
            f'<p>The campaign\'s counts are at <a href="{state_link}">{PAGE}/state.json</a>, '
            "and <code>djdask status MODULE</code> reads them from the database.</p>"
        )


#: Why the page is not drawn: the scheduler runs without Dask's dashboard ...
_DASHBOARD_OFF = (
    "<p>This scheduler runs without Dask's dashboard, so the campaign page, drawn with it, is off "
    "too. Set <code>djdask.campaign.dask-dashboard: true</code> (the default; "
    "<code>DASK_DJDASK__CAMPAIGN__DASK_DASHBOARD=true</code>) to have both for the next campaign.</p>"
)
#: ... or its Python has no (suitable) Bokeh.
_MISSING_BOKEH = (
    "<p>This page, like the rest of the Dask dashboard, needs Bokeh, which the Python that runs "
    "this scheduler does not have (or not in a version Dask supports).</p>"
    f'<p>Install it where the scheduler runs: <code>pip install "{BOKEH_REQUIREMENT}"</code> '
    f'(or <code>conda install "{BOKEH_REQUIREMENT}"</code>), then restart the scheduler.</p>'
)
