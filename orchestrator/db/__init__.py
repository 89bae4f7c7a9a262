"""The database: connecting as DataJoint does (or the embedded PostgreSQL), its connection
capacity, outages waited out, and the server's clock.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "Budget",
    "EmbeddedPostgres",
    "MYSQL_CONNECTION_CODES",
    "OUTAGE_TOPIC",
    "OWN_CONNECTIONS",
    "Outage",
    "budget",
    "check",
    "default_data_dir",
    "describe",
    "fit",
    "import_datajoint",
    "is_configured",
    "is_connection_error",
    "is_store_unavailable",
    "is_transient",
    "naive_utc",
    "planned_workers",
    "reconnect",
    "redact",
    "redact_logs",
    "secrets",
    "session_now_sql",
    "session_offset",
    "settings_view",
    "store_backoff",
    "utc_now",
    "utc_now_sql",
    "utc_text",
    "wait_for_database",
]

_WHERE = {
    "Budget": "capacity",
    "EmbeddedPostgres": "connect",
    "MYSQL_CONNECTION_CODES": "outage",
    "OUTAGE_TOPIC": "outage",
    "OWN_CONNECTIONS": "capacity",
    "Outage": "outage",
    "budget": "capacity",
    "check": "capacity",
    "default_data_dir": "connect",
    "describe": "connect",
    "fit": "capacity",
    "import_datajoint": "connect",
    "is_configured": "connect",
    "is_connection_error": "outage",
    "is_store_unavailable": "outage",
    "is_transient": "outage",
    "naive_utc": "clock",
    "planned_workers": "capacity",
    "reconnect": "outage",
    "redact": "connect",
    "redact_logs": "connect",
    "secrets": "connect",
    "session_now_sql": "clock",
    "session_offset": "clock",
    "settings_view": "connect",
    "store_backoff": "outage",
    "utc_now": "clock",
    "utc_now_sql": "clock",
    "utc_text": "clock",
    "wait_for_database": "outage",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
