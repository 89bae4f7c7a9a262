"""Profile kinds that turn a name into Dask workers.

Only ``local`` exists yet: a LocalCluster of worker processes with one thread
each (DataJoint allows one ``make()`` at a time per process).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

__all__ = ["local_cluster"]


def local_cluster(workers: int | None = None, *, dashboard_address: str | None = None):
    """Start a LocalCluster of ``workers`` single-threaded worker processes.

    Parameters
    ----------
    workers : int, optional
        Number of worker processes; default the number of CPU cores.
    dashboard_address : str, optional
        Where the Dask dashboard listens; default ``djdask.campaign.dashboard-address``.
    """
    from distributed import LocalCluster

    from orchestrator import config

    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}.")
    # Worker processes inherit an ignored SIGINT: Ctrl-C at the terminal goes to
    # the whole process group, and it is the campaign's to handle (stop claiming,
    # let running make() calls finish), not the workers' to die of.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=str(config.get("campaign.dashboard-address", dashboard_address)),
            silence_logs=logging.ERROR,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
