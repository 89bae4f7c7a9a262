"""The ``djdask`` command line: the parser, what each command does, and the campaign-record commands.

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
    "clusters": "commands",
    "command": "parser",
    "config": "commands",
    "db": "commands",
    "demo": "commands",
    "errors": "commands",
    "gc": "commands",
    "ignore": "commands",
    "jobs": "commands",
    "jobs_of_campaign": "campaigns",
    "main": "parser",
    "owner_windows": "campaigns",
    "plan": "commands",
    "populate": "commands",
    "release": "commands",
    "report": "campaigns",
    "retry": "commands",
    "status": "commands",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
