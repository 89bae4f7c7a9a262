"""A test pipeline whose make() fails for exactly one key (item 3)."""

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_badkey")


@schema
class Item(dj.Manual):
    definition = """
    item_id : int32
    """


@schema
class Square(dj.Computed):
    definition = """
    -> Item
    ---
    square : int64
    """

    def make(self, key):
        if key["item_id"] == 3:
            raise ValueError(f"item {key['item_id']} is unlucky")
        self.insert1({**key, "square": key["item_id"] ** 2})
