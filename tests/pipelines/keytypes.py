"""A pipeline keyed by every attribute type DataJoint 2.x declares in a primary key (issue 27).

``Thing`` has one key attribute per type (``DJDASK_TEST_KEY_TYPES`` picks them: the tests
leave out what DataJoint itself cannot store on a backend); ``Seen`` is computed from it
and its jobs table, where DataJoint can declare one, holds every type.  ``Plain`` and
``PlainSeen`` use only the types whose jobs table DataJoint declares on both backends.
``Token`` / ``TokenWord`` is DataJoint's own uuid test schema (``Topic`` / ``Item``): a
computed table keyed by a uuid of its own, so it has no jobs table.

Each make() appends the key it received, each value's type and repr, to the file named
by ``DJDASK_TEST_LEDGER``; the key whose ``i`` is ``DJDASK_TEST_FAIL`` raises.
"""

import datetime
import decimal
import json
import os
import uuid

import datajoint as dj

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_keytypes")

DECLARED = {
    "i": "int32",
    "f": "float64",
    "d": "decimal(6,2)",
    "c": "char(8)",
    "v": "varchar(16)",
    "dt": "date",
    "ts": "datetime",
    "u": "uuid",
    "e": "enum('alpha', 'beta')",
}
TYPES = [t for t in os.environ.get("DJDASK_TEST_KEY_TYPES", ",".join(DECLARED)).split(",") if t]
PLAIN = ["i", "d", "c", "v", "dt"]  # DataJoint 2.3 declares their jobs tables on PostgreSQL too


def _key_definition(names):
    return "\n".join(f"{name} : {DECLARED[name]}" for name in names)


def _trace(table, key):
    path = os.environ.get("DJDASK_TEST_LEDGER")
    if path:
        seen = {name: [type(value).__name__, repr(value)] for name, value in sorted(key.items())}
        with open(path, "a") as f:
            f.write(json.dumps({"table": table, "key": seen}) + "\n")
    if os.environ.get("DJDASK_TEST_FAIL") == str(key.get("i")):
        raise ValueError(f"key {key['i']} fails on purpose")


@schema
class Thing(dj.Manual):
    definition = _key_definition(TYPES) + "\n---\nnote = '' : varchar(8)\n"


@schema
class Seen(dj.Computed):
    definition = """
    -> Thing
    ---
    n : int32
    """

    def make(self, key):
        _trace("Seen", key)
        (Thing & key).fetch1("note")  # the key finds its row, as populate()'s key does
        self.insert1({**key, "n": key["i"] * 2})


@schema
class Plain(dj.Manual):
    definition = _key_definition(PLAIN)


@schema
class PlainSeen(dj.Computed):
    definition = """
    -> Plain
    ---
    n : int32
    """

    def make(self, key):
        _trace("PlainSeen", key)
        (Plain & key).fetch1("KEY")
        self.insert1({**key, "n": key["i"] + 1})


@schema
class Token(dj.Manual):
    definition = """
    token : uuid
    ---
    n : int32
    """


@schema
class TokenWord(dj.Computed):
    definition = """
    word_id : uuid
    ---
    -> Token
    word : varchar(16)
    """

    key_source = Token

    def make(self, key):
        _trace("TokenWord", key)
        for word in ("a", "b"):
            self.insert1({**key, "word": word, "word_id": uuid.uuid5(key["token"], word)})


AUTO = [Seen, PlainSeen] + ([TokenWord] if "u" in TYPES else [])


def rows(n=4):
    """``n`` rows of every type; char and varchar values with trailing spaces."""
    out = []
    for i in range(n):
        out.append(
            dict(
                i=i,
                f=0.5 + i,
                d=decimal.Decimal("1.25") + i,
                c="ab " if i % 2 else "x",
                v=f"v{i}  ",
                dt=datetime.date(2024, 1, 1 + i),
                ts=datetime.datetime(2024, 1, 1, 12, i, 30),
                u=uuid.UUID(int=i + 1),
                e="alpha" if i % 2 else "beta",
            )
        )
    return out


def seed(n=4):
    Thing.insert([{k: v for k, v in r.items() if k in TYPES} for r in rows(n)])
    Plain.insert([{k: v for k, v in r.items() if k in PLAIN} for r in rows(n)])
    if "u" in TYPES:
        Token.insert([{"token": uuid.UUID(int=100 + i), "n": i} for i in range(3)])
