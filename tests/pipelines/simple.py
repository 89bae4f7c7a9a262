"""A two-table pipeline declared on demand, for in-process tests and benchmarks.

``declare(instance, schema_name)`` binds it to a DataJoint Instance, so that
one process can hold copies on several servers at once.
"""

from __future__ import annotations


def declare(instance, schema_name: str):
    """Declare ``Key`` (Manual) and ``Result`` (Computed, v = k) in ``schema_name``."""
    import datajoint as dj

    schema = instance.Schema(schema_name)

    @schema
    class Key(dj.Manual):
        definition = """
        k : int32
        """

    @schema
    class Result(dj.Computed):
        definition = """
        -> Key
        ---
        v : int32
        """

        def make(self, key):
            self.insert1({**key, "v": key["k"]})

    return Key, Result
