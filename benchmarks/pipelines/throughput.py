"""The benchmark pipeline of cases 1, 2, 5, 6 and 7: two Manual tables, three Computed ones.

``Fast.make()`` inserts one row and does nothing else, so a populate of it
measures the framework: reservation, transaction, bookkeeping.  ``Slow.make()``
sleeps 50 ms first (``DJDASK_BENCH_MAKE_SECONDS``), a make() whose cost is all
its own, so a populate of it measures how close to ideal the workers are kept
busy.  ``Nap.make()`` sleeps 200 ms, for case 7's many workers on two cores.

The schema name starts with ``djdask.demo.schema-prefix``
(``DASK_DJDASK__DEMO__SCHEMA_PREFIX``), as the test pipelines' do: each side of
a benchmark gets its own copy.
"""

from __future__ import annotations

import os
import time

from djdask.config import namespace as config
from djdask.db.connect import import_datajoint

dj = import_datajoint()

#: Seconds one ``Slow.make()`` takes.
SLOW_SECONDS = float(os.environ.get("DJDASK_BENCH_MAKE_SECONDS", "0.05"))

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_throughput")

#: Seconds one ``Nap.make()`` takes (case 7, many workers).
NAP_SECONDS = float(os.environ.get("DJDASK_BENCH_NAP_SECONDS", "0.2"))

__all__ = ["NAP_SECONDS", "SLOW_SECONDS", "Fast", "Key", "Nap", "Slow", "SlowKey", "schema"]


@schema
class Key(dj.Manual):
    definition = """
    k : int32
    """


@schema
class Fast(dj.Computed):
    definition = """
    -> Key
    ---
    v : int32
    """

    def make(self, key):
        self.insert1({**key, "v": key["k"]})


@schema
class SlowKey(dj.Manual):
    definition = """
    s : int32
    """


@schema
class Slow(dj.Computed):
    definition = """
    -> SlowKey
    ---
    v : int32
    """

    def make(self, key):
        time.sleep(SLOW_SECONDS)
        self.insert1({**key, "v": key["s"]})


@schema
class Nap(dj.Computed):
    definition = """
    -> SlowKey
    ---
    v : int32
    """

    def make(self, key):
        time.sleep(NAP_SECONDS)
        self.insert1({**key, "v": key["s"]})
