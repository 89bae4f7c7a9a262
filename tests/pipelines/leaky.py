"""A test pipeline whose make() fails, for odd keys, with a message holding the
database password and the S3 secret key, as a driver's error quoting a
connection URL would."""

import os

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_leaky")


@schema
class Source(dj.Manual):
    definition = """
    src_id : int32
    """


@schema
class Copy(dj.Computed):
    definition = """
    -> Source
    ---
    value : int32
    """

    def make(self, key):
        if key["src_id"] % 2:
            raise RuntimeError(
                f"cannot open mysql://{os.environ['DJ_USER']}:{os.environ['DJ_PASS']}@db.example:3306/lab "
                f"nor s3://{os.environ.get('AWS_SECRET_ACCESS_KEY', '')}@bucket for src_id {key['src_id']}"
            )
        self.insert1({**key, "value": key["src_id"]})
