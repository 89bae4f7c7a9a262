"""What runs on a Dask worker: the executor of a batch, the watchdog nanny plugin, and the
isolation of a make()'s global random generators.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "Beacon",
    "COMPUTE_RESOURCE",
    "DATABASE_ENV",
    "DATABASE_RESOURCE",
    "FORGET_ENV",
    "LIFETIME_ENV",
    "PLUGIN_NAME",
    "PipelinePlugin",
    "RUNNING_METRIC",
    "STAGGER_ENV",
    "TOPIC",
    "WatchdogPlugin",
    "beacon_path",
    "compute_batch",
    "describe_exit",
    "fetch_batch",
    "insert_batch",
    "is_isolated",
    "isolate",
    "owned_by_this_thread",
    "peak_memory",
    "run_batch",
    "this_thread_owns",
]

_WHERE = {
    "Beacon": "watchdog",
    "COMPUTE_RESOURCE": "split",
    "DATABASE_ENV": "executor",
    "FORGET_ENV": "executor",
    "DATABASE_RESOURCE": "split",
    "compute_batch": "split",
    "fetch_batch": "split",
    "insert_batch": "split",
    "LIFETIME_ENV": "executor",
    "PLUGIN_NAME": "executor",
    "PipelinePlugin": "executor",
    "RUNNING_METRIC": "executor",
    "STAGGER_ENV": "executor",
    "TOPIC": "watchdog",
    "WatchdogPlugin": "watchdog",
    "beacon_path": "watchdog",
    "describe_exit": "watchdog",
    "is_isolated": "randomness",
    "isolate": "randomness",
    "owned_by_this_thread": "randomness",
    "peak_memory": "executor",
    "run_batch": "executor",
    "this_thread_owns": "randomness",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
