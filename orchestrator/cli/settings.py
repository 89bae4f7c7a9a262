"""``djdask config``: every djdask setting, its value and where it was set."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from djdask.cli.output import print_table
from djdask.config import schema
from djdask.db.connect import redact, secrets

if TYPE_CHECKING:
    import argparse

__all__ = ["config"]


def config(args: argparse.Namespace) -> int:
    """``djdask config``: the settings, all checked by :func:`djdask.cli.parser.main` first, with
    secrets masked; ``--markdown``: the settings' reference (docs/settings.md)."""
    if args.markdown:
        print(schema.markdown(), end="")
        return 0
    known = secrets()
    rows = []
    for path, _spec in schema.leaves():
        value = schema.settings()
        for part in path.split(".")[1:]:
            value = (value or {}).get(part) if isinstance(value, dict) else None
        if path == "djdask.clusters":  # profiles may hold secrets: `djdask clusters show` masks them
            value = sorted(value or {})
        value = schema.shown(path, value)
        where = schema.source(path)
        rows.append(
            {"setting": path, "value": redact(json.dumps(value, default=str), known), "set in": where or "default"}
        )
    print_table(rows, ["setting", "value", "set in"])
    print("\nAll settings fit their schema. Their meanings: djdask config --markdown (docs/settings.md).")
    return 0
