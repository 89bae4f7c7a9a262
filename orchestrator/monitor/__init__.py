"""The campaign's published state, the terminal board, and the campaign page of the dashboard.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "CampaignBoard",
    "DashboardPlugin",
    "METADATA_KEY",
    "StatePublisher",
    "TerminalProgress",
    "fill_colour",
    "format_eta",
    "format_rows",
    "longest_running",
    "page_link",
    "report_html",
]

_WHERE = {
    "CampaignBoard": "progress",
    "DashboardPlugin": "dashboard",
    "METADATA_KEY": "progress",
    "StatePublisher": "publisher",
    "TerminalProgress": "progress",
    "fill_colour": "dashboard",
    "format_eta": "progress",
    "format_rows": "progress",
    "longest_running": "progress",
    "page_link": "dashboard",
    "report_html": "dashboard",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
