"""How the commands print: rows as a plain table, keys as ``attr=value`` pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["key_text", "print_table"]


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` under a heading of ``columns``, each column as wide as its widest value."""
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def key_text(key: Mapping[str, Any]) -> str:
    """A key as ``attr=value`` pairs, ``subject_id=12, session=3``."""
    return ", ".join(f"{k}={v}" for k, v in key.items())
