"""A synthetic pipeline of many auto-populated tables, for the scale tests and benchmarks.

``DJDASK_TEST_MANY_TABLES`` (default 200) Computed tables over one Manual ``Session``,
spread over ``DJDASK_TEST_MANY_SCHEMAS`` (4) schemas in declaration order, so that
foreign keys cross schemas:

- wide: every tenth table hangs off ``Session`` alone, ten roots of chains;
- deep: the others hang off the table before them, chains ten tables deep;
- every fifth table also reads the root of the chain before its own (a diamond
  across chains), and every seventh has a Part table.

Each make() writes one row (and one part row).
"""

import os

import datajoint as dj

from djdask.config import namespace as config

N_TABLES = int(os.environ.get("DJDASK_TEST_MANY_TABLES", "200"))
N_SCHEMAS = int(os.environ.get("DJDASK_TEST_MANY_SCHEMAS", "4"))
PREFIX = config.get("demo.schema-prefix")

schemas = [dj.Schema(f"{PREFIX}_many_{i}") for i in range(N_SCHEMAS)]


@schemas[0]
class Session(dj.Manual):
    definition = """
    session : int32
    """


def _make(self, key):
    self.insert1({**key, "value": len(self.__class__.__name__)})
    part = getattr(self.__class__, "Item", None)
    if part is not None:
        part.insert1({**key, "item": 0})


def _table(i):
    name = f"Step{i:03d}"
    parents = ["-> Session"] if i % 10 == 0 else [f"-> {_name(i - 1)}"]
    if i % 5 == 0 and i >= 10:
        parents.append(f"-> {_name((i // 10 - 1) * 10)}")
    definition = "\n".join(parents) + "\n---\nvalue : int32\n"
    attrs = {"definition": definition, "make": _make}
    if i % 7 == 0:
        attrs["Item"] = type("Item", (dj.Part,), {"definition": "-> master\nitem : int32\n"})
    cls = type(name, (dj.Computed,), attrs)
    return schemas[min(N_SCHEMAS - 1, i * N_SCHEMAS // N_TABLES)](cls, context={**globals(), **_tables})


def _name(i):
    return f"Step{i:03d}"


_tables = {}
for _i in range(N_TABLES):
    _tables[_name(_i)] = _table(_i)
globals().update(_tables)
