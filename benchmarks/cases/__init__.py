"""The benchmark cases: djdask and its baseline, measured one after the other in one process.

``python -m benchmarks.cases NAME --out FILE [--quick]`` runs one case against
the server named by the ``DJ_*`` variables, with schema names from
``DASK_DJDASK__DEMO__SCHEMA_PREFIX``, and writes its rows (see :func:`row`) to
FILE as JSON.  :mod:`benchmarks.__main__` starts one such process per case and
backend, so that no case inherits another's imports, connections or memory.

One module per case, named for what it measures (:data:`CASES` maps the names
``--case`` takes to them): :mod:`~benchmarks.cases.throughput` (cases 1 and 2),
:mod:`~benchmarks.cases.enqueue` (3), :mod:`~benchmarks.cases.reference` (4),
:mod:`~benchmarks.cases.memory` (5), :mod:`~benchmarks.cases.group_commit` (6),
:mod:`~benchmarks.cases.many_workers` (7), :mod:`~benchmarks.cases.many_tables` (8),
:mod:`~benchmarks.cases.follow` (9), :mod:`~benchmarks.cases.split` (10).
Their set-up is shared: :mod:`~benchmarks.cases.common` (sizes, rows, the
environment, warm workers, a campaign, :func:`settle`) and
:mod:`~benchmarks.cases.sides` (the baseline's processes, the ceiling, the turns).

How each side is measured, the same way for both:

- The processes that do the work are started, have imported the pipeline and
  connected before the clock starts: djdask's LocalCluster of two single-threaded
  workers, DataJoint's two ``populate`` processes (released together by
  :class:`Racers`).  Jobs tables exist on both sides beforehand.
- The clock covers what the user's command then does: djdask's
  ``Campaign(...).run()`` (plan, enqueue, claim, make, complete); DataJoint's
  ``Table.populate(reserve_jobs=True)`` (its ``jobs.refresh()``, reserve, make,
  complete), until the last process is done.
- Each side has its own copy of the tables (its own schema prefix), seeded with
  the same keys in one SQL statement.
- Before each side's clock starts, the server is let :func:`settle`: the
  previous side's dirty pages written and deleted rows purged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmarks.cases.common import row, settle, sizes
from benchmarks.cases.enqueue import case_enqueue
from benchmarks.cases.follow import case_follow
from benchmarks.cases.group_commit import case_group
from benchmarks.cases.many_tables import case_tables
from benchmarks.cases.many_workers import case_workers
from benchmarks.cases.memory import case_memory
from benchmarks.cases.reference import case_reference
from benchmarks.cases.sides import Racers
from benchmarks.cases.split import case_split
from benchmarks.cases.throughput import case_throughput

__all__ = ["CASES", "Racers", "row", "settle", "sizes"]

CASES: dict[str, Callable[[bool, Path], list[dict]]] = {
    "enqueue": case_enqueue,
    "throughput": case_throughput,
    "reference": case_reference,
    "memory": case_memory,
    "group": case_group,
    "workers": case_workers,
    "tables": case_tables,
    "follow": case_follow,
    "split": case_split,
}
