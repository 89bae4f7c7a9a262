"""A test pipeline for compute workers without database access (``database: none``).

``Result`` has DataJoint's tripartite make(): ``make_fetch`` reads its ``Source`` row and,
beyond its foreign keys, the ``Gain`` row of the day (a table it names in no key);
``make_compute`` sleeps ``DJDASK_TEST_MAKE_SECONDS`` and appends ``<key> <hostname> <pid>
<DJDASK_DATABASE or -> <names of the DJ_*/AWS_* variables it sees set, or ->`` to the file named by
``DJDASK_TEST_WHERE`` (where it ran, and what it was given); ``make_insert`` writes the row
and its part.  ``DJDASK_TEST_STARTED`` names a file ``make_compute`` touches as it starts
(``<key>.started``, holding its pid), for a test that changes the inputs or kills the
worker meanwhile.

With ``DJDASK_TEST_FETCHED``, each ``make_fetch`` appends ``<key> <pid>`` to that file
(both fetches of a key: the one for ``make_compute`` and the one in the insert's transaction).

``Plain`` has a plain ``make(key)``, which cannot be split; ``Big``'s ``make_compute``
returns ``DJDASK_TEST_BIG_MB`` MiB (for ``djdask.campaign.max-transfer``).
"""

import os
import socket
import time
from pathlib import Path

import datajoint as dj
import numpy as np

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_split")


@schema
class Source(dj.Manual):
    definition = """
    source_id : int32
    ---
    reading : float64
    """


@schema
class Gain(dj.Manual):
    definition = """
    day : int16
    ---
    gain : float64
    """


@schema
class Result(dj.Computed):
    definition = """
    -> Source
    ---
    value : float64
    """

    class Sample(dj.Part):
        definition = """
        -> master
        sample : int16
        ---
        sample_value : float64
        """

    def make_fetch(self, key):
        reading = (Source & key).fetch1("reading")
        gain = (Gain & {"day": 1}).fetch1("gain")  # beyond its foreign keys
        fetched = os.environ.get("DJDASK_TEST_FETCHED")
        if fetched:
            with open(fetched, "a") as f:
                f.write(f"{key['source_id']} {os.getpid()}\n")
        return float(reading), float(gain)

    def make_compute(self, key, reading, gain):
        started = os.environ.get("DJDASK_TEST_STARTED")
        if started:
            Path(started, f"{key['source_id']}.started").write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("DJDASK_TEST_MAKE_SECONDS", "0")))
        given = sorted(n for n, v in os.environ.items() if n.startswith(("DJ_", "AWS_")) and v)
        line = (
            f"{key['source_id']} {socket.gethostname()} {os.getpid()} {os.environ.get('DJDASK_DATABASE', '-')} "
            f"{','.join(given) or '-'}\n"
        )
        where = os.environ.get("DJDASK_TEST_WHERE")
        if where:
            with open(where, "a") as f:
                f.write(line)
        samples = np.arange(3) * reading * gain
        return reading * gain, samples

    def make_insert(self, key, value, samples):
        self.insert1({**key, "value": value})
        self.Sample.insert({**key, "sample": i, "sample_value": float(v)} for i, v in enumerate(samples))


@schema
class Plain(dj.Computed):
    definition = """
    -> Source
    ---
    doubled : float64
    """

    def make(self, key):
        self.insert1({**key, "doubled": 2 * (Source & key).fetch1("reading")})


@schema
class Big(dj.Computed):
    definition = """
    -> Source
    ---
    size : int64
    """

    def make_fetch(self, key):
        return ((Source & key).fetch1("reading"),)

    def make_compute(self, key, reading):
        return (np.zeros(int(float(os.environ.get("DJDASK_TEST_BIG_MB", "1")) * 2**20), dtype=np.uint8),)

    def make_insert(self, key, data):
        self.insert1({**key, "size": int(data.nbytes)})


AUTO = [Result, Plain, Big]


def seed(n: int) -> None:
    """``n`` sources and the day's gain."""
    Gain.insert1({"day": 1, "gain": 1.5}, skip_duplicates=True)
    Source.insert(({"source_id": k, "reading": k + 0.25} for k in range(n)), skip_duplicates=True)
