"""A test pipeline whose make() leaves a trace outside the database.

Each make() appends one line, ``<key> <pid> <SLURM job id or ->``, to the file named by
``DJDASK_TEST_LEDGER`` before it inserts its row, and sleeps
``DJDASK_TEST_MAKE_SECONDS`` in between: the file counts make() calls, the
table counts commits.
"""

import os
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
        line = f"{key['source_id']} {os.getpid()} {os.environ.get('SLURM_JOB_ID', '-')}\n".encode()
        fd = os.open(os.environ["DJDASK_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of a short line: atomic with O_APPEND
        finally:
            os.close(fd)
        time.sleep(float(os.environ.get("DJDASK_TEST_MAKE_SECONDS", "0")))
        self.insert1({**key, "value": key["source_id"] * 3})
