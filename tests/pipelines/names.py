"""A test pipeline keyed by text, for names that hold quotes, backslashes, percent signs and
SQL fragments (tests/integration/test_restrictions.py)."""

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_names")


@schema
class Name(dj.Manual):
    definition = """
    name : varchar(64)
    """


@schema
class Length(dj.Computed):
    definition = """
    -> Name
    ---
    length : int32
    """

    def make(self, key):
        self.insert1({**key, "length": len(key["name"])})
