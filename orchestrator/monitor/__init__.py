"""The campaign's published state, the terminal board, the campaign page of the dashboard, the
links to it, and what is seen from outside: its health and its Prometheus metrics.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "CampaignBoard",
    "CampaignCollector",
    "DashboardPlugin",
    "Links",
    "METADATA_KEY",
    "StatePublisher",
    "TerminalProgress",
    "fill_colour",
    "format_eta",
    "format_rows",
    "following_line",
    "health_verdict",
    "links_to",
    "login_host",
    "longest_running",
    "metric_families",
    "page_link",
    "report_html",
    "served_at",
    "sliding_rates",
]

_WHERE = {
    "CampaignBoard": "progress",
    "CampaignCollector": "metrics",
    "DashboardPlugin": "dashboard",
    "Links": "links",
    "METADATA_KEY": "progress",
    "StatePublisher": "publisher",
    "TerminalProgress": "progress",
    "fill_colour": "dashboard",
    "format_eta": "progress",
    "format_rows": "progress",
    "following_line": "health",
    "health_verdict": "health",
    "longest_running": "progress",
    "metric_families": "metrics",
    "links_to": "links",
    "login_host": "links",
    "page_link": "links",
    "report_html": "dashboard",
    "served_at": "links",
    "sliding_rates": "progress",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
