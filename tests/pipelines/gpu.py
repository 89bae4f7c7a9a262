"""A test pipeline with a table whose make() needs a GPU worker resource.

Each row records the name of the Dask worker that made it.
"""

import datajoint as dj
from distributed import get_worker

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_gpu")


@schema
class Frame(dj.Manual):
    definition = """
    frame_id : int32
    """


@schema
class OnGpu(dj.Computed):
    definition = """
    -> Frame
    ---
    worker : varchar(64)
    """
    djdask_resources = {"GPU": 1}

    def make(self, key):
        self.insert1({**key, "worker": str(get_worker().name)})


@schema
class OnAny(dj.Computed):
    definition = """
    -> Frame
    ---
    worker : varchar(64)
    """

    def make(self, key):
        self.insert1({**key, "worker": str(get_worker().name)})
