"""Keys read with djdask's own SQL, as DataJoint's fetch gives them, and back as stored."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["KeyCodec", "sql_value"]


class KeyCodec:
    """Keys read with plain SQL, turned into what DataJoint's own fetch gives, and back.

    djdask reads a jobs table's keys with its own SQL (a claim is one statement), so
    the driver's values arrive as the database stores them: a ``uuid`` is 16 raw
    bytes on MySQL/MariaDB, where DataJoint's ``fetch`` and ``populate()`` hand
    ``make()`` a :class:`uuid.UUID`.  :meth:`decode` applies DataJoint's own
    ``codecs.decode_attribute`` (the one function every fetch decodes with; not in
    DataJoint's documented API, so :func:`djdask.djcompat.check_compatibility` checks
    it) to the attributes whose stored form differs from their Python form;
    :func:`sql_value` turns a decoded value back into what the driver must send to
    match the stored one.

    Parameters
    ----------
    heading : datajoint.Heading
        The heading the rows were read with (a jobs table's, or a table's).
    names : sequence of str
        The key's attributes, in the order of a row tuple.
    """

    def __init__(self, heading: Any, names: Any) -> None:
        from datajoint.codecs import decode_attribute  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

        self.names = list(names)
        # Only attributes whose stored form differs are decoded: a claim of 1,000 keys of
        # plain integers pays nothing.
        self._decoders = {
            name: (
                _decode_uuid if heading[name].uuid else lambda value, attr=heading[name]: decode_attribute(attr, value)
            )
            for name in self.names
            if heading[name].uuid or heading[name].json or heading[name].codec is not None
        }

    def decode(self, row: Any) -> dict:
        """A row (tuple in ``names`` order, or dict) as the key DataJoint's fetch returns."""
        values = [row[n] for n in self.names] if isinstance(row, dict) else list(row)
        key = dict(zip(self.names, values))
        for name, decode in self._decoders.items():
            if isinstance(key[name], (bytes, bytearray, memoryview, str)):  # not decoded already
                key[name] = decode(key[name])
        return key


def _decode_uuid(value: Any) -> Any:
    """A stored uuid as DataJoint's fetch gives it: 16 bytes on MySQL/MariaDB, text from
    PostgreSQL's native ``uuid`` type (which DataJoint's decoder does not expect)."""
    return uuid.UUID(value) if isinstance(value, str) else uuid.UUID(bytes=bytes(value))


def sql_value(value: Any, backend: str) -> Any:
    """A key value as a driver argument matching the stored form: DataJoint stores a
    :class:`uuid.UUID` as ``binary(16)`` on MySQL/MariaDB (as text to PostgreSQL's ``uuid``
    type); every other value is sent as is."""
    if isinstance(value, uuid.UUID):
        return value.bytes if backend != "postgresql" else str(value)
    return value
