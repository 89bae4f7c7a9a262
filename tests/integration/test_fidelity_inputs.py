"""Fidelity II (issue 27): keys of every type, inputs beyond foreign keys, DataJoint's messages.

Each test populates a pipeline under two prefixes, once with ``djdask populate`` and once
with DataJoint's own sequential ``populate()`` (``Runs`` of :mod:`test_fidelity`), and
compares what ``make()`` received, the rows, and the error rows.  Both backends, where
DataJoint itself supports the case there.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.integration.test_fidelity import SCHEMAS, Runs, jobs_rows

pytestmark = pytest.mark.integration

SCHEMAS.update({"keytypes": "keytypes", "hidden": "hidden", "lost": "lost"})

#: What DataJoint 2.3 cannot do on PostgreSQL, so neither side can: insert a uuid (it sends
#: bytes to the uuid column).  Every other type is in the key on both backends.
ALL_TYPES = "i,f,d,c,v,dt,ts,u,e"
POSTGRES_TYPES = "i,f,d,c,v,dt,ts,e"


def ledger(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def two_ledgers(runs: Runs, tmp_path) -> tuple:
    """Each side's make() writes to its own ledger."""
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    runs.ours_env["DJDASK_TEST_LEDGER"] = str(ours)
    runs.theirs_env["DJDASK_TEST_LEDGER"] = str(theirs)
    return ours, theirs


def test_every_key_type_reaches_make_as_populate_gives_it(djdask, sql, server, tmp_path):
    """A key of integers, float, decimal, char and varchar with trailing spaces, date,
    datetime, uuid and enum: each make() must receive from djdask the very key (types and
    values) that DataJoint's populate() gives it, and the rows must be the same.  A failure
    means djdask handed make() a key in its stored form (a uuid as 16 raw bytes on MariaDB:
    every key an error row) or lost a value's padding or precision on the way."""
    postgres = server.backend == "postgresql"
    runs = Runs(djdask, "keytypes", DJDASK_TEST_KEY_TYPES=POSTGRES_TYPES if postgres else ALL_TYPES)
    ours, theirs = two_ledgers(runs, tmp_path)
    runs.both("m.seed()")
    runs.populate()
    assert runs.sequential() == {t: [] for t in (["Seen", "PlainSeen"] + ([] if postgres else ["TokenWord"]))}
    nonempty = ["__seen", "__plain_seen"] + ([] if postgres else ["__token_word"])
    runs.same(sql, nonempty=nonempty)
    mine, other = ledger(ours), ledger(theirs)
    assert len(mine) == len(other) == 8 + (0 if postgres else 3), (mine, other)
    assert sorted(map(json.dumps, mine)) == sorted(map(json.dumps, other))
    if postgres:
        # DataJoint 2.3 cannot declare the jobs table of a key with float64, datetime or an enum on
        # PostgreSQL (it re-reads their server type names): djdask runs Seen as populate() does,
        # unreserved; PlainSeen's key types have a jobs table.
        assert "~~seen" not in sql.tables(runs.schema())
        assert "~~plain_seen" in sql.tables(runs.schema())
        refused = runs.ours("m.Token.insert1({'token': __import__('uuid').uuid4(), 'n': 1})")
        assert refused.returncode != 0, "DataJoint now stores uuids on PostgreSQL: add 'u' to POSTGRES_TYPES"
    else:
        assert {"~~seen", "~~plain_seen"} <= sql.tables(runs.schema())
        assert "~~token_word" not in sql.tables(runs.schema())  # its key is its own uuid


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)
def test_uuid_keys_through_restriction_error_rows_listing_and_retry(djdask, sql, tmp_path):
    """uuid keys wherever djdask builds a key from a row it read: a restriction by uuid, an
    error row listed by `djdask jobs` and `djdask errors` with its uuid, `djdask retry` and
    the campaign that makes the retried key.  (DataJoint stores no uuid on PostgreSQL.)
    A failure means one of those paths matched the stored bytes against a uuid's text, or
    handed make() the bytes."""
    runs = Runs(djdask, "keytypes", DJDASK_TEST_KEY_TYPES=ALL_TYPES, DJDASK_TEST_FAIL="2")
    ours, _ = two_ledgers(runs, tmp_path)
    runs.both("m.seed()")
    runs.cli("populate", "keytypes", "--workers", "1", "--target", "Seen", "-r", "u=00000000000000000000000000000002")
    made = [line["key"] for line in ledger(ours)]
    assert [k["u"] for k in made] == [["UUID", "UUID('00000000-0000-0000-0000-000000000002')"]], made
    runs.populate(expect=1)  # key i=2 fails on purpose
    listing = runs.cli("jobs", "keytypes", "--status", "error").stdout
    assert "u=00000000-0000-0000-0000-000000000003" in listing and "fails on purpose" in listing, listing
    errors = runs.cli("errors", "keytypes").stdout
    assert "u=00000000-0000-0000-0000-000000000003" in errors, errors
    retried = runs.cli("retry", "keytypes").stdout
    assert "1 error row(s) back to pending" in retried, retried
    runs.ours_env.pop("DJDASK_TEST_FAIL")
    runs.theirs_env.pop("DJDASK_TEST_FAIL")
    runs.populate()
    assert runs.sequential() == {"Seen": [], "PlainSeen": [], "TokenWord": []}
    runs.same(sql, nonempty=["__seen", "__plain_seen", "__token_word"])
    assert Counter(line["key"]["i"][1] for line in ledger(ours) if line["table"] == "Seen") == {
        "0": 1,
        "1": 1,
        "2": 2,  # failed once on purpose, made after the retry
        "3": 1,
    }
    assert jobs_rows(sql, runs.schema(), "__seen") == []


def test_summary_waits_for_its_last_input_and_a_check_for_the_sibling_it_reads(djdask, sql, tmp_path):
    """``MouseSummary`` (key_source ``Mouse & Behavior``) while one Behavior key of mouse 1 is
    made 3 s after the others, and ``QualityCheck``, which reads ``SessionSummary`` that its
    foreign keys do not name.  Every summary must see all 4 of its mouse's inputs (a ledger
    counts them), no QualityCheck key may end as an error row, the rows must be populate()'s,
    and the campaign must name the QualityCheck dependency with how to declare it.  Declared
    (djdask.campaign.after), a second campaign must run each QualityCheck once, after its
    SessionSummary; and ``--target MouseSummary -r mouse_id=1`` must make Behavior first.
    A failure means a summary was made from part of its inputs, silently, or a make() that
    read a table not yet made was charged with an error."""
    runs = Runs(
        djdask,
        "hidden",
        DJDASK_TEST_SLOW="1-3",
        DJDASK_TEST_SLOW_SECONDS="3",
        DJDASK_TEST_SUMMARY_SECONDS="0.2",
    )
    ours, theirs = two_ledgers(runs, tmp_path)
    runs.both("m.seed()")
    result = runs.populate(workers=2)
    summaries = [line for line in ledger(ours) if line["table"] == "MouseSummary"]
    assert sorted(s["mouse_id"] for s in summaries) == [0, 1, 2], summaries
    assert all(s["inputs"] == 4 for s in summaries), f"a summary was made from part of its inputs: {summaries}"
    assert jobs_rows(sql, runs.schema(), "__quality_check", "status") == [], result.stdout + result.stderr
    hint = next((ln for ln in result.stderr.splitlines() if "djdask_after = [SessionSummary]" in ln), "")
    assert "QualityCheck" in hint and "djdask.campaign.after: {QualityCheck: [SessionSummary]}" in hint, result.stderr
    assert runs.sequential() == {"Behavior": [], "MouseSummary": [], "SessionSummary": [], "QualityCheck": []}
    runs.same(sql, nonempty=["__behavior", "__mouse_summary", "__session_summary", "__quality_check"])
    assert all(s["inputs"] == 4 for s in ledger(theirs) if s["table"] == "MouseSummary")

    # Declared, the dependency orders the two tables from the start: each check runs once.
    runs.ours("m.QualityCheck.delete_quick(); m.SessionSummary.delete_quick()")
    runs.ours("(m.MouseSummary & 'mouse_id = 1').delete_quick(); (m.Behavior & 'mouse_id = 1').delete_quick()")
    ours.unlink()
    runs.ours_env["DASK_DJDASK__CAMPAIGN__AFTER"] = json.dumps({"QualityCheck": ["SessionSummary"]})
    again = runs.populate(workers=2)
    checks = Counter((line["mouse_id"], line["session_id"]) for line in ledger(ours) if line["table"] == "QualityCheck")
    assert len(checks) == 12 and set(checks.values()) == {1}, (checks, again.stderr)
    assert "djdask_after" not in again.stderr, again.stderr

    # --target and a restriction: Behavior, which only the key_source names, comes along.
    runs.ours("(m.MouseSummary & 'mouse_id = 1').delete_quick(); (m.Behavior & 'mouse_id = 1').delete_quick()")
    ours.unlink()
    runs.cli("populate", "hidden", "--workers", "1", "--target", "MouseSummary", "-r", "mouse_id=1")
    assert [line for line in ledger(ours) if line["table"] == "MouseSummary"] == [
        {"table": "MouseSummary", "mouse_id": 1, "inputs": 4}
    ]
    runs.same(sql)


def test_a_lost_connection_error_row_says_what_populate_says(djdask, sql, tmp_path):
    """A make() that raises LostConnectionError every time: djdask retries it (max-attempts 2),
    then its error row's message is exactly what DataJoint's populate(reserve_jobs=True)
    writes, the attempts told at the end of the stack.  A failure means djdask's own words
    went into DataJoint's error_message."""
    runs = Runs(djdask, "lost", DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS="2", DASK_DJDASK__CAMPAIGN__RETRY_BACKOFF="100ms")
    runs.both("m.seed()")
    runs.populate(expect=1)
    runs.sequential("display_progress=False, reserve_jobs=True, suppress_errors=True")
    read = (
        "import json\n"
        "rows = (m.Fetched.jobs & {'status': 'error'}).to_dicts(order_by='sample_id')\n"
        "print('ROWS=' + json.dumps([[r['sample_id'], r['error_message'], r['error_stack']] for r in rows]))\n"
    )

    def rows(run) -> list:
        out = run(read)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("ROWS="))[5:])

    mine, theirs = rows(runs.ours), rows(runs.theirs)
    assert (
        [r[:2] for r in mine]
        == [r[:2] for r in theirs]
        == [[i, f"LostConnectionError: the archive of sample {i} went away"] for i in range(3)]
    ), (mine, theirs)
    assert all(
        r[2]
        .rstrip()
        .endswith("djdask: gave up after 2 attempts, each failed transiently (djdask.campaign.max-attempts)")
        for r in mine
    ), mine
