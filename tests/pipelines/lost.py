"""A make() that raises DataJoint's LostConnectionError every time (issue 27): djdask retries
it as transient, then writes the error row DataJoint's populate() writes."""

import datajoint as dj
from datajoint.errors import LostConnectionError

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_lost")


@schema
class Sample(dj.Manual):
    definition = """
    sample_id : int32
    """


@schema
class Fetched(dj.Computed):
    definition = """
    -> Sample
    """

    def make(self, key):
        raise LostConnectionError(f"the archive of sample {key['sample_id']} went away")


AUTO = [Fetched]


def seed():
    Sample.insert({"sample_id": i} for i in range(3))
