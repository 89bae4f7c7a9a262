"""A test pipeline whose make() inserts a master row and parts, and once kills its worker.

The first make() of ``DJDASK_TEST_KILL_KEY`` inserts the master row and two of
its three parts, then sends SIGKILL to its own process; the file
``DJDASK_TEST_MARKER`` records that it happened, so the next attempt completes.
"""

import os
import signal
from pathlib import Path

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_parts")


@schema
class Recording(dj.Manual):
    definition = """
    recording_id : int32
    """


@schema
class Analysis(dj.Computed):
    definition = """
    -> Recording
    ---
    n_parts : int16
    """

    class Piece(dj.Part):
        definition = """
        -> master
        piece : int16
        ---
        value : float64
        """

    def make(self, key):
        self.insert1({**key, "n_parts": 3})
        marker = Path(os.environ["DJDASK_TEST_MARKER"])
        for piece in range(3):
            if piece == 2 and key["recording_id"] == int(os.environ["DJDASK_TEST_KILL_KEY"]) and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            self.Piece.insert1({**key, "piece": piece, "value": piece * 0.5})
