"""A test pipeline whose make() fails in two ways: items divisible by 3 with a message
that names the item, items leaving 1 modulo 3 with one fixed message."""

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_failing")


@schema
class Thing(dj.Manual):
    definition = """
    thing_id : int32
    """


@schema
class Outcome(dj.Computed):
    definition = """
    -> Thing
    ---
    value : int64
    """

    def make(self, key):
        if key["thing_id"] % 3 == 0:
            raise ValueError(f"value {key['thing_id']} is divisible by 3")
        if key["thing_id"] % 3 == 1:
            raise RuntimeError("the detector was off")
        self.insert1({**key, "value": key["thing_id"]})
