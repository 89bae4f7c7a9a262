"""``djdask db``: the embedded PostgreSQL server djdask starts when no database is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from djdask.db.connect import EmbeddedPostgres

if TYPE_CHECKING:
    import argparse

__all__ = ["db"]


def db(args: argparse.Namespace) -> int:
    """``djdask db start|stop|status|url``; ``status`` exits with 3 when the server is stopped."""
    server = EmbeddedPostgres()
    if args.action == "start":
        status = server.start()
        print(f"Embedded PostgreSQL running (pid {status.pid}) in {status.data_dir}")
        print(f"URL: {server.url()}")
    elif args.action == "stop":
        print("Embedded PostgreSQL stopped." if server.stop() else "Embedded PostgreSQL was not running.")
    elif args.action == "status":
        status = server.status()
        state = f"running (pid {status.pid})" if status.running else "stopped"
        print(f"Embedded PostgreSQL: {state}; data in {status.data_dir}")
        return 0 if status.running else 3
    elif args.action == "url":
        print(server.url())
    return 0
