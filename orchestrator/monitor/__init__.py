"""The campaign's published state, the terminal board, the campaign page of the dashboard, and the links to it.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "CampaignBoard",
    "DashboardPlugin",
    "Links",
    "METADATA_KEY",
    "StatePublisher",
    "TerminalProgress",
    "fill_colour",
    "format_eta",
    "format_rows",
    "links_to",
    "login_host",
    "longest_running",
    "page_link",
    "report_html",
    "served_at",
]

_WHERE = {
    "CampaignBoard": "progress",
    "DashboardPlugin": "dashboard",
    "Links": "links",
    "METADATA_KEY": "progress",
    "StatePublisher": "publisher",
    "TerminalProgress": "progress",
    "fill_colour": "dashboard",
    "format_eta": "progress",
    "format_rows": "progress",
    "longest_running": "progress",
    "links_to": "links",
    "login_host": "links",
    "page_link": "links",
    "report_html": "dashboard",
    "served_at": "links",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
