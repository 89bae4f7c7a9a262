"""The ``djdask`` command line: the parser, one module per group of commands, and how they print.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "COMMAND_MODULES",
    "build_parser",
    "cancel",
    "clusters",
    "command",
    "config",
    "db",
    "demo",
    "errors",
    "gc",
    "ignore",
    "jobs",
    "jobs_of_campaign",
    "main",
    "owner_windows",
    "plan",
    "populate",
    "release",
    "report",
    "retry",
    "status",
]

_WHERE = {
    "COMMAND_MODULES": "parser",
    "build_parser": "parser",
    "cancel": "campaigns",
    "clusters": "profiles",
    "command": "parser",
    "config": "settings",
    "db": "server",
    "demo": "running",
    "errors": "inspection",
    "gc": "garbage",
    "ignore": "jobs_tables",
    "jobs": "jobs_tables",
    "jobs_of_campaign": "campaigns",
    "main": "parser",
    "owner_windows": "campaigns",
    "plan": "inspection",
    "populate": "running",
    "release": "jobs_tables",
    "report": "campaigns",
    "retry": "jobs_tables",
    "status": "inspection",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
