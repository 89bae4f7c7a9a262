"""A test pipeline whose make() always fails transiently: the connection it needs is lost
every time.  Each call appends the key to the file named by ``DJDASK_TEST_LEDGER``."""

import os

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_unreliable")


@schema
class Sample(dj.Manual):
    definition = """
    sample_id : int32
    """


@schema
class Upload(dj.Computed):
    definition = """
    -> Sample
    """

    def make(self, key):
        with open(os.environ["DJDASK_TEST_LEDGER"], "a") as f:
            f.write(f"{key['sample_id']}\n")
        raise ConnectionResetError(104, f"connection to the archive reset (sample {key['sample_id']})")
