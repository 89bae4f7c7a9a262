"""A test pipeline for group commit, whose rows say which make() call committed them.

``Entry.make()`` names its call ``<pid>-<n>`` (the n-th make() of its process), appends
``<key> <call> <time>`` to the file named by ``DJDASK_TEST_LEDGER`` and inserts its row
with that call: the ledger counts make() calls, the table says which call's transaction
committed.  A call after the committing one would mean a key made again after its commit.

``DJDASK_TEST_FAULTS`` (``"13=raise,40=segv"``) makes the make() of those keys raise a
``ValueError`` or kill its own process with SIGSEGV after writing its line.
``DJDASK_TEST_MAKE_SECONDS`` is slept before the insert.

``Split`` has a tripartite make() (``make_fetch``/``make_compute``/``make_insert``), which
group commit refuses.
"""

import itertools
import os
import time

import datajoint as dj
from make_faults import append_to_ledger, misbehave

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_grouped")

_calls = itertools.count(1)


@schema
class Source(dj.Manual):
    definition = """
    source_id : int32
    """


@schema
class Entry(dj.Computed):
    definition = """
    -> Source
    ---
    value : int64
    made_by : varchar(40)     # the make() call whose transaction committed this row
    """

    def make(self, key):
        call = f"{os.getpid()}-{next(_calls)}"
        append_to_ledger(f"{key['source_id']} {call} {time.time():.6f}\n")
        misbehave(key["source_id"])
        time.sleep(float(os.environ.get("DJDASK_TEST_MAKE_SECONDS", "0")))
        self.insert1({**key, "value": key["source_id"] * 3, "made_by": call})


@schema
class Split(dj.Computed):
    definition = """
    -> Source
    ---
    doubled : int64
    """

    def make_fetch(self, key):
        return ((Source & key).fetch1("source_id"),)

    def make_compute(self, key, source_id):
        return (source_id * 2,)

    def make_insert(self, key, doubled):
        self.insert1({**key, "doubled": doubled})
