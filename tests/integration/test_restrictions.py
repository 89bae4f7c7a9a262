"""Restriction values are values, never SQL: ``-r name=VALUE`` for a text key matches only
the key equal to that literal string, on both backends, whatever quotes, backslashes,
percent signs or SQL fragments it holds."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

NAMES = [
    "a' OR '1'='1",
    "a",
    "1",
    "back\\slash",
    "back\\\\slash",
    'say "hi"',
    "50% off",
    "50%% off",
    "x'; DROP TABLE `names`; --",
    " padded ",
    "plain",
]
TRICKY = [n for n in NAMES if n not in ("a", "1", "plain")]

#: In one process: for each name, what the planner counts and what the campaign's queue would
#: enqueue under ``-r name=<name>`` (djdask's own code path, from the parsed restriction on).
MATCHES = """
import json, sys
import names
from djdask.jobs.queue import JobQueue
from djdask.planning.planner import plan, select
out = {}
for name in json.loads(sys.argv[1]):
    selection = select("names", (), ["name=" + name])
    rows = plan(selection.graph, selection.tables, selection.restriction)
    queue = JobQueue(names.Length(), selection.restriction)
    out[name] = {"missing": rows[0].missing, "keys": sorted(queue.key_source.to_arrays("name").tolist())}
print(json.dumps(out))
"""


def insert(djdask, values):
    result = djdask.python(
        f"import names, json; names.Name.insert([{{'name': n}} for n in json.loads({json.dumps(json.dumps(values))})])"
    )
    assert result.returncode == 0, result.stderr


def matches(djdask, values) -> dict:
    result = djdask.python(MATCHES.replace("sys.argv[1]", repr(json.dumps(values))))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def made(sql, prefix) -> list[str]:
    return sorted(r[0] for r in sql.query(f"SELECT name FROM {sql.table(prefix + '_names', '__length')}"))


def test_tricky_values_match_only_their_own_key(djdask, sql, prefix):
    """Every key present: each tricky restriction counts and queues exactly its own key, and a
    campaign restricted so makes exactly that key."""
    insert(djdask, NAMES)
    found = matches(djdask, TRICKY)
    assert found == {name: {"missing": 1, "keys": [name]} for name in TRICKY}
    done = []
    for name in ("a' OR '1'='1", "back\\slash"):
        result = djdask("populate", "names", "-r", f"name={name}", "--workers", "1")
        assert result.returncode == 0, result.stdout + result.stderr
        done.append(name)
        assert made(sql, prefix) == sorted(done), name
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_names', 'name')}") == len(NAMES)


def test_a_tricky_value_with_no_such_key_matches_nothing(djdask, sql, prefix):
    """Only harmless keys present: the injection-shaped restrictions match none of them."""
    insert(djdask, ["a", "1", "plain", "back\\\\slash", "50%% off"])
    found = matches(djdask, ["a' OR '1'='1", "x'; DROP TABLE `names`; --", "back\\slash", "50% off", "%"])
    assert all(v == {"missing": 0, "keys": []} for v in found.values()), found
    result = djdask("populate", "names", "-r", "name=a' OR '1'='1", "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert made(sql, prefix) == []
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_names', 'name')}") == 5
