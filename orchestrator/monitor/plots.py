"""The campaign page's plots over time: each table's throughput and make() durations, and a
following campaign's arrivals (keys its looks found) beside the keys made.

Each line has its table's colour (:data:`PALETTE`, in the campaign's table order) and a
legend names it.  The figures are made once per browser session; :func:`history_data` and
:meth:`CampaignBoard.arrivals <djdask.monitor.progress.CampaignBoard.arrivals>` give their
data at each refresh.
"""

from __future__ import annotations

from typing import Any

from djdask.monitor.progress import CampaignBoard

__all__ = ["PALETTE", "arrivals_figure", "history_data", "history_figures"]

#: Line colours of the tables in the history plots (Bokeh's Category10).
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def _legend_outside(fig: Any) -> None:
    """The legend (one entry per table, in its colour) right of the plot, where it hides no
    line; a click on an entry hides that table's line."""
    legend = fig.legend[0]
    legend.click_policy = "hide"
    legend.label_text_font_size = "11px"
    fig.add_layout(legend, "right")


def history_figures(board: CampaignBoard) -> tuple[Any, Any, Any, Any]:
    """The throughput and the make() duration plots, with their data sources; each line has
    its table's colour and the legend names it."""
    # lazy: bokeh (1.2 s), perhaps missing where the scheduler runs (the page then says so)
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    rates = ColumnDataSource({"xs": [], "ys": [], "table": [], "colour": []}, name="djdask-throughput")
    spread = ColumnDataSource({"xs": [], "ys": [], "table": [], "colour": []}, name="djdask-durations")
    throughput = figure(
        height=220,
        sizing_mode="stretch_width",
        title=f"Throughput (keys/s) per table, averaged over {board.window:g} s",
        x_axis_label="minutes",
    )
    throughput.multi_line("xs", "ys", source=rates, line_color="colour", line_width=2, legend_field="table")
    throughput.add_tools(HoverTool(tooltips=[("table", "@table")]))
    _legend_outside(throughput)
    durations = figure(
        height=220,
        sizing_mode="stretch_width",
        title="make() durations per table (keys per bin)",
        x_axis_type="log",
        x_axis_label="seconds",
    )
    durations.multi_line("xs", "ys", source=spread, line_color="colour", line_width=2, legend_field="table")
    durations.add_tools(HoverTool(tooltips=[("table", "@table")]))
    _legend_outside(durations)
    return throughput, rates, durations, spread


def arrivals_figure() -> tuple[Any, Any]:
    """A following campaign's course: the keys its looks found and the keys made, over time
    (hidden for a campaign that does not follow)."""
    # lazy: bokeh (1.2 s), perhaps missing where the scheduler runs (the page then says so)
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    source = ColumnDataSource({"minutes": [], "found": [], "made": []}, name="djdask-arrivals")
    fig = figure(
        height=200,
        sizing_mode="stretch_width",
        title="Following: keys found by its looks and keys made (all tables, since the start)",
        x_axis_label="minutes",
        visible=False,
    )
    fig.step("minutes", "found", source=source, mode="after", line_color=PALETTE[1], line_width=2, legend_label="found")
    fig.step("minutes", "made", source=source, mode="after", line_color=PALETTE[0], line_width=2, legend_label="made")
    fig.add_tools(HoverTool(tooltips=[("minute", "@minutes{0.0}"), ("found", "@found"), ("made", "@made")]))
    _legend_outside(fig)
    return fig, source


def history_data(board: CampaignBoard) -> tuple[dict[str, list], dict[str, list]]:
    order = [t["table"] for t in board.state["tables"]] if board.state else []
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(order)}
    rates: dict[str, list] = {"xs": [], "ys": [], "table": [], "colour": []}
    for table, (xs, ys) in board.throughput().items():
        rates["xs"].append(xs)
        rates["ys"].append(ys)
        rates["table"].append(table)
        rates["colour"].append(colour.get(table, "#777777"))
    spread: dict[str, list] = {"xs": [], "ys": [], "table": [], "colour": []}
    for table, bins in board.durations().items():  # each bin drawn as a bar's outline
        spread["xs"].append([x for a, b, _ in bins for x in (a, a, b, b)])
        spread["ys"].append([y for _, _, n in bins for y in (0, n, n, 0)])
        spread["table"].append(table)
        spread["colour"].append(colour.get(table, "#777777"))
    return rates, spread
