"""Tables whose inputs are not only their foreign-key parents (issue 27).

- ``MouseSummary`` (``-> Mouse``, ``key_source = Mouse & Behavior``) aggregates every
  ``Behavior`` row of a mouse: it must never be made before the mouse's last one.
- ``QualityCheck`` (``-> Session``) reads ``SessionSummary & key``, a sibling declared
  before it that its foreign keys do not name.

``Behavior`` of the session named by ``DJDASK_TEST_SLOW`` (``"1-3"``: mouse 1, session 3)
sleeps ``DJDASK_TEST_SLOW_SECONDS``; ``SessionSummary`` sleeps ``DJDASK_TEST_SUMMARY_SECONDS``
per key.  Each ``MouseSummary`` and ``QualityCheck`` make() appends a line to the file named by
``DJDASK_TEST_LEDGER``: the summary's with how many inputs it saw.
"""

import json
import os
import time

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_hidden")


def _ledger(line):
    path = os.environ.get("DJDASK_TEST_LEDGER")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


@schema
class Mouse(dj.Manual):
    definition = """
    mouse_id : int32
    """


@schema
class Session(dj.Manual):
    definition = """
    -> Mouse
    session_id : int32
    """


@schema
class Behavior(dj.Computed):
    definition = """
    -> Session
    ---
    score : int32
    """

    def make(self, key):
        if os.environ.get("DJDASK_TEST_SLOW") == f"{key['mouse_id']}-{key['session_id']}":
            time.sleep(float(os.environ.get("DJDASK_TEST_SLOW_SECONDS", "3")))
        self.insert1({**key, "score": key["session_id"] * 10 + key["mouse_id"]})


@schema
class MouseSummary(dj.Computed):
    definition = """
    -> Mouse
    ---
    n_sessions : int32
    total : int32
    """

    key_source = Mouse & Behavior

    def make(self, key):
        scores = (Behavior & key).to_arrays("score")
        _ledger({"table": "MouseSummary", "mouse_id": key["mouse_id"], "inputs": len(scores)})
        self.insert1({**key, "n_sessions": len(scores), "total": int(sum(scores))})


@schema
class SessionSummary(dj.Computed):
    definition = """
    -> Session
    ---
    doubled : int32
    """

    def make(self, key):
        time.sleep(float(os.environ.get("DJDASK_TEST_SUMMARY_SECONDS", "0")))
        self.insert1({**key, "doubled": key["session_id"] * 2})


@schema
class QualityCheck(dj.Computed):
    definition = """
    -> Session
    ---
    ok : bool
    """

    def make(self, key):
        _ledger({"table": "QualityCheck", **key})
        doubled = (SessionSummary & key).fetch1("doubled")
        self.insert1({**key, "ok": doubled >= 0})


AUTO = [Behavior, MouseSummary, SessionSummary, QualityCheck]

MICE, SESSIONS = 3, 4


def seed():
    Mouse.insert([{"mouse_id": m} for m in range(MICE)])
    Session.insert([{"mouse_id": m, "session_id": s} for m in range(MICE) for s in range(SESSIONS)])
