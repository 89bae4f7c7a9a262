"""DataJoint's jobs tables as a queue: set-based enqueue, claims, leases and orphans, tables
without a jobs table, and legacy jobs tables.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "ERROR_MESSAGE_LENGTH",
    "JOBS_COLUMNS",
    "JobQueue",
    "LeaseKeeper",
    "Owner",
    "SessionThread",
    "UnreservedQueue",
    "among_keys",
    "check_legacy_jobs",
    "declared_jobs",
    "ignore",
    "is_conflict",
    "is_permission_error",
    "keys_condition",
    "keys_in",
    "lease_timeout",
    "legacy_jobs_tables",
    "recover_orphans",
    "renew_leases",
    "restamp",
    "retry_on_conflict",
    "session_gone",
    "tidy",
]

_WHERE = {
    "ERROR_MESSAGE_LENGTH": "queue",
    "JOBS_COLUMNS": "queue",
    "JobQueue": "queue",
    "LeaseKeeper": "leases",
    "Owner": "queue",
    "SessionThread": "leases",
    "UnreservedQueue": "unreserved",
    "among_keys": "enqueue",
    "check_legacy_jobs": "legacy",
    "declared_jobs": "queue",
    "ignore": "enqueue",
    "is_conflict": "conflicts",
    "is_permission_error": "queue",
    "keys_condition": "queue",
    "keys_in": "enqueue",
    "lease_timeout": "leases",
    "legacy_jobs_tables": "legacy",
    "recover_orphans": "leases",
    "renew_leases": "leases",
    "restamp": "leases",
    "retry_on_conflict": "conflicts",
    "session_gone": "leases",
    "tidy": "enqueue",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
