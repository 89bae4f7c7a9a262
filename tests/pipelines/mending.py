"""A test pipeline whose make() fails the first time it sees a key and succeeds after.

``Reading.make`` appends the key to the file named by ``DJDASK_TEST_LEDGER`` at every
call; the first call for a key (a marker file per key in ``DJDASK_TEST_MARKER_DIR``
remembers) raises ValueError, as a make() that reads a file an instrument has not
finished writing: an error row, not a transient failure, so no campaign tries it again by
itself (``djdask retry``, or a following campaign's ``djdask.campaign.retry-errors-after``).
"""

import os
from pathlib import Path

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_mending")


@schema
class Recording(dj.Manual):
    definition = """
    recording_id : int32
    """


@schema
class Reading(dj.Computed):
    definition = """
    -> Recording
    ---
    value : int64
    """

    def make(self, key):
        with open(os.environ["DJDASK_TEST_LEDGER"], "a") as f:
            f.write(f"{key['recording_id']}\n")
        marker = Path(os.environ["DJDASK_TEST_MARKER_DIR"]) / f"mending-{key['recording_id']}"
        if not marker.exists():
            marker.write_text("seen")
            raise ValueError(f"recording {key['recording_id']}: its file is not complete yet")
        self.insert1({**key, "value": key["recording_id"] * 2})
