"""A test pipeline whose make() leaves a trace outside the database.

Each make() appends one line, ``<key> <pid> <batch job id or -> <start time> <the worker's
djdask deadline or ->``, to the file named by
``DJDASK_TEST_LEDGER`` before it inserts its row, and sleeps
``DJDASK_TEST_MAKE_SECONDS`` in between: the file counts make() calls, the
table counts commits.

``DJDASK_TEST_FAULTS`` (``"7=memory,13=segv,21=hang"``) makes the make() of those keys
misbehave after writing its line: allocate ``DJDASK_TEST_HOG_MB`` (1536) MiB and touch
every page, kill its own process with SIGSEGV, or never return.
"""

import os
import signal
import threading
import time

import datajoint as dj

from djdask import config

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
        line = f"{key['source_id']} {os.getpid()} {_job_id()} {time.time():.3f} {_deadline()}\n"
        line = line.encode()
        fd = os.open(os.environ["DJDASK_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of a short line: atomic with O_APPEND
        finally:
            os.close(fd)
        _misbehave(key["source_id"])
        time.sleep(float(os.environ.get("DJDASK_TEST_MAKE_SECONDS", "0")))
        self.insert1({**key, "value": key["source_id"] * 3})


#: Where each batch system puts the job's id (SLURM, PBS, Grid Engine, LSF); the tests
#: that run a job script's body by hand name theirs in DJDASK_TEST_JOB_ID.
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "JOB_ID", "LSB_JOBID", "DJDASK_TEST_JOB_ID")


def _job_id():
    return next((os.environ[v] for v in JOB_ID_VARIABLES if os.environ.get(v)), "-")


def _misbehave(source_id):
    faults = dict(item.split("=") for item in os.environ.get("DJDASK_TEST_FAULTS", "").split(",") if item)
    fault = faults.get(str(source_id))
    if fault == "memory":
        hog = b"\1" * (int(os.environ.get("DJDASK_TEST_HOG_MB", "1536")) * 2**20)
        time.sleep(5)  # held: the nanny sees it
        del hog
    elif fault == "segv":
        _segfault()
    elif fault == "hang":
        while True:
            time.sleep(1)


def _deadline():
    """The time after which this worker starts no make() (its lifetime), as djdask set it."""
    try:
        from distributed import get_worker

        deadline = get_worker().plugins["djdask-pipeline"].deadline
    except (ValueError, KeyError):  # not on a djdask worker
        return "-"
    return "-" if deadline is None else f"{deadline:.3f}"


def _segfault():
    """Die of SIGSEGV here: sent to this thread (os.kill may hand it to another thread, which
    takes a moment, time enough for make() to go on and commit), and wait for it."""
    signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
    time.sleep(60)
