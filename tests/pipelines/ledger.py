"""A test pipeline whose make() leaves a trace outside the database.

Each make() appends one line, ``<key> <pid> <batch job id or -> <start time> <the worker's
djdask deadline or ->``, to the file named by
``DJDASK_TEST_LEDGER`` before it inserts its row, and sleeps
``DJDASK_TEST_MAKE_SECONDS`` in between: the file counts make() calls, the
table counts commits.

With ``DJDASK_TEST_WHERE`` set, make() also appends ``<key> <hostname> <HOME> <batch job id
or ->`` to that file: where it ran, for the tests on several nodes (``tests/nodes.py``).

``DJDASK_TEST_FAULTS`` (``"7=memory,13=segv,21=hang"``) makes the make() of those keys
misbehave after writing its line: allocate ``DJDASK_TEST_HOG_MB`` (1536) MiB and touch
every page, kill its own process with SIGSEGV, or never return.
"""

import os
import socket
import time

import datajoint as dj
from make_faults import append_to_ledger, misbehave

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_ledger")


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
    """

    def make(self, key):
        append_to_ledger(f"{key['source_id']} {os.getpid()} {_job_id()} {time.time():.3f} {_deadline()}\n")
        if os.environ.get("DJDASK_TEST_WHERE"):
            where = f"{key['source_id']} {socket.gethostname()} {os.environ.get('HOME', '-')} {_job_id()}\n"
            append_to_ledger(where, "DJDASK_TEST_WHERE")
        misbehave(key["source_id"])
        time.sleep(float(os.environ.get("DJDASK_TEST_MAKE_SECONDS", "0")))
        self.insert1({**key, "value": key["source_id"] * 3})


#: Where each batch system puts the job's id (SLURM, PBS, Grid Engine, LSF); the tests
#: that run a job script's body by hand name theirs in DJDASK_TEST_JOB_ID.
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "JOB_ID", "LSB_JOBID", "DJDASK_TEST_JOB_ID")


def _job_id():
    return next((os.environ[v] for v in JOB_ID_VARIABLES if os.environ.get(v)), "-")


def _deadline():
    """The time after which this worker starts no make() (its lifetime), as djdask set it."""
    try:
        from distributed import get_worker

        deadline = get_worker().plugins["djdask-pipeline"].deadline
    except (ValueError, KeyError):  # not on a djdask worker
        return "-"
    return "-" if deadline is None else f"{deadline:.3f}"
