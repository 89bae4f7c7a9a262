"""A test pipeline with a transient failure and a permanent one.

``Flaky.make`` raises ConnectionError the first time it sees a key (a marker
file per key in ``DJDASK_TEST_MARKER_DIR`` remembers), then succeeds.
``Broken.make`` raises ValueError for every key and appends a line per call to
``DJDASK_TEST_LEDGER``.
"""

import os
from pathlib import Path

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_flaky")


@schema
class Thing(dj.Manual):
    definition = """
    thing_id : int32
    """


# Declared first: a make() that fails while tables declared before it still have keys to
# make waits for them and runs again (djdask.planning.inputs); this one must fail at once.
@schema
class Broken(dj.Computed):
    definition = """
    -> Thing
    """

    def make(self, key):
        with open(os.environ["DJDASK_TEST_LEDGER"], "a") as f:
            f.write(f"{key['thing_id']}\n")
        raise ValueError(f"thing {key['thing_id']} is malformed")


@schema
class Flaky(dj.Computed):
    definition = """
    -> Thing
    """

    def make(self, key):
        marker = Path(os.environ["DJDASK_TEST_MARKER_DIR"]) / f"flaky-{key['thing_id']}"
        if not marker.exists():
            marker.write_text("seen")
            raise ConnectionError(f"connection to the object store reset (thing {key['thing_id']})")
        self.insert1(key)
