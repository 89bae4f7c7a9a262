"""A test pipeline written for DataJoint's thread-safe mode (``DJ_THREAD_SAFE=true``):
its own ``dj.Instance`` built from the ``DJ_*`` environment, ``inst.Schema``, and no
use of the global ``dj.config`` or ``dj.conn()`` (both raise in that mode)."""

import os

import datajoint as dj
import numpy as np

from djdask.config import namespace as config

_env = os.environ
_extra = {"database__name": _env["DJ_DATABASE_NAME"]} if _env.get("DJ_BACKEND") == "postgresql" else {}
inst = dj.Instance(
    host=_env["DJ_HOST"],
    user=_env["DJ_USER"],
    password=_env.get("DJ_PASS", ""),
    port=int(_env["DJ_PORT"]),
    use_tls=False,
    backend=_env["DJ_BACKEND"],
    **_extra,
)

schema = inst.Schema(f"{config.get('demo.schema-prefix')}_threadsafe")


@schema
class Sample(dj.Manual):
    definition = """
    sample_id : int32
    ---
    value : float64
    """


@schema
class Squared(dj.Computed):
    definition = """
    -> Sample
    ---
    squared : float64
    """

    def make(self, key):
        self.insert1({**key, "squared": (Sample & key).fetch1("value") ** 2})


@schema
class Profile(dj.Computed):
    definition = """
    -> Squared
    ---
    curve : <blob>
    """

    def make(self, key):
        squared = (Squared & key).fetch1("squared")
        self.insert1({**key, "curve": np.linspace(0, squared, 5)})


AUTO = (Squared, Profile)


def seed(samples: int = 10) -> None:
    Sample.insert([{"sample_id": i, "value": 0.5 * i} for i in range(1, samples + 1)])
