"""``djdask gc``: the Zarr stores of ``<xarray@>`` results that no row references, removed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dask.utils import parse_timedelta

from djdask.config import namespace as config
from djdask.db.connect import connect
from djdask.planning.loader import load_pipeline
from djdask.storage.codec import collect_garbage
from djdask.storage.stores import configure_store

if TYPE_CHECKING:
    import argparse

__all__ = ["gc"]


def gc(args: argparse.Namespace) -> int:
    """``djdask gc MODULE``: remove (or with ``--dry-run`` list) the unreferenced stores older
    than ``--min-age``."""
    connect()
    configure_store(args.store, probe=False)  # gc reads and removes; it writes nothing new
    loaded = load_pipeline(args.module)
    min_age = parse_timedelta(config.resolve("storage.gc-min-age", args.min_age))
    connection = next(iter(loaded.tables.values()))().connection
    report = collect_garbage(loaded.schemas, connection=connection, dry_run=args.dry_run, min_age=min_age)
    verb = "would remove" if args.dry_run else "removed"
    for store, stats in report.items():
        print(
            f"store {store}: {stats['referenced']} referenced, {stats['orphaned']} unreferenced "
            f"({stats['orphaned_bytes']} bytes); {verb} {stats['removed']}; "
            f"{stats['too_recent']} kept as younger than {min_age:.0f} s"
        )
        for path in stats["paths"]:
            print(f"  {path}")
    return 0
