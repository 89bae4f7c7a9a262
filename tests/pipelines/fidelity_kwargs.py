"""A fidelity test pipeline whose makes take keyword arguments, as
``populate(make_kwargs={"scale": 3})`` passes them: a plain make with a named
argument and a tripartite make whose ``make_fetch`` takes ``**kwargs``.  Every
auto-populated table here accepts ``scale``, so a campaign may pass it to all."""

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_fidelity_kwargs")


@schema
class Item(dj.Manual):
    definition = """
    item_id : int32
    ---
    value : float64
    """


@schema
class Scaled(dj.Computed):
    definition = """
    -> Item
    ---
    scaled : float64
    scale_used : int16
    """

    def make(self, key, scale=1):
        value = (Item & key).fetch1("value")
        self.insert1({**key, "scaled": value * scale, "scale_used": scale})


@schema
class Offset(dj.Computed):
    """Tripartite: DataJoint passes make_kwargs to make_fetch."""

    definition = """
    -> Scaled
    ---
    shifted : float64
    kwargs_seen : varchar(64)
    """

    def make_fetch(self, key, **kwargs):
        return (Scaled & key).fetch1("scaled"), ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))

    def make_compute(self, key, scaled, seen):
        return scaled + 10.0, seen

    def make_insert(self, key, shifted, seen):
        self.insert1({**key, "shifted": shifted, "kwargs_seen": seen})


AUTO = (Scaled, Offset)


def seed(items: int = 8) -> None:
    Item.insert([{"item_id": i, "value": 1.5 * i} for i in range(1, items + 1)])
