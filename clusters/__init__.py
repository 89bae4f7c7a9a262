"""Cluster profiles: where a campaign's Dask workers run.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "DEFAULT_SHARED",
    "Demand",
    "JobStatus",
    "JobWatch",
    "KINDS",
    "Profile",
    "batch_kind",
    "controller_path",
    "local_cluster",
    "profile_names",
    "resolve",
    "without_credentials",
    "without_database",
    "worker_environment",
]

_WHERE = {
    "DEFAULT_SHARED": "security",
    "Demand": "scaling",
    "JobStatus": "jobwatch",
    "JobWatch": "jobwatch",
    "KINDS": "profiles",
    "Profile": "profiles",
    "batch_kind": "profiles",
    "controller_path": "paths",
    "local_cluster": "profiles",
    "profile_names": "profiles",
    "resolve": "profiles",
    "without_credentials": "credentials",
    "without_database": "credentials",
    "worker_environment": "profiles",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
