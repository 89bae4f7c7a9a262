"""A fidelity test pipeline with a Computed table whose key source's key is no
foreign key of it: ``Detection``'s primary key is its own ``detection_id``, ``Scan``
is a secondary reference, and ``key_source = Scan``.  Each make() inserts several
detections with ids derived from the scan's key, so every run gives the same ids.

Declaring it needs ``dj.config.jobs.allow_new_pk_fields_in_computed_tables``
(``DJ_JOBS_ALLOW_NEW_PK_FIELDS_IN_COMPUTED_TABLES=true``).  DataJoint cannot make a
jobs table for it ("no FK-derived primary key attributes found"); its populate()
runs it without reservations.  ``Area`` (below ``Scan``) and ``DetectionCount``
(below ``Detection``, FK-derived key) are ordinary Computed tables.
"""

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_fidelity_newkey")


@schema
class Scan(dj.Manual):
    definition = """
    scan_id : int32
    ---
    n_spots : int16
    """


@schema
class Area(dj.Computed):
    definition = """
    -> Scan
    ---
    area : float64
    """

    def make(self, key):
        self.insert1({**key, "area": 2.5 * (Scan & key).fetch1("n_spots")})


@schema
class Detection(dj.Computed):
    definition = """
    detection_id : int32
    ---
    -> Scan
    amplitude : float64
    """

    key_source = Scan

    def make(self, key):
        n_spots = (Scan & key).fetch1("n_spots")
        self.insert(
            [
                {
                    "detection_id": key["scan_id"] * 100 + i,
                    "scan_id": key["scan_id"],
                    "amplitude": key["scan_id"] + i / 10,
                }
                for i in range(n_spots)
            ]
        )


@schema
class DetectionCount(dj.Computed):
    definition = """
    -> Detection
    ---
    doubled : float64
    """

    def make(self, key):
        self.insert1({**key, "doubled": 2 * (Detection & key).fetch1("amplitude")})


AUTO = (Area, Detection, DetectionCount)


def seed(scans: int = 5) -> None:
    Scan.insert([{"scan_id": s, "n_spots": 1 + s % 3} for s in range(1, scans + 1)])
