"""A pipeline of 200 auto-populated tables over 4 schemas (tests/pipelines/many.py):
`djdask plan` and `djdask status` list every table with its true counts.  (How long they
take is measured by the benchmarks, not asserted here; the test prints it.)"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["postgres"], indirect=True)]


def test_plan_and_status_of_a_200_table_pipeline(server, djdask, sql, prefix):
    seeded = djdask.python("import many; many.Session.insert([{'session': 0}, {'session': 1}])")
    assert seeded.returncode == 0, seeded.stderr
    made = djdask.python("import many; many.Step000.populate(); many.Step001.populate(); many.Step010.populate()")
    assert made.returncode == 0, made.stderr
    start = time.monotonic()
    planned = djdask("plan", "many", "--json")
    plan_s = time.monotonic() - start
    assert planned.returncode == 0, planned.stderr
    rows = {r["table"]: r for r in json.loads(planned.stdout)["tables"]}
    assert len(rows) == 200 and rows["Step199"]["tier"] == "computed"
    # Made: Step000, Step001, Step010 (2 rows each). Ready: the children of what is made.
    assert (rows["Step000"]["total"], rows["Step000"]["missing"]) == (2, 0)
    assert (rows["Step002"]["total"], rows["Step002"]["missing"]) == (2, 2)  # after Step001
    assert (rows["Step011"]["total"], rows["Step011"]["missing"]) == (2, 2)  # after Step010
    assert (rows["Step015"]["total"], rows["Step015"]["missing"]) == (0, 0)  # needs Step014 and Step000
    assert (rows["Step020"]["total"], rows["Step020"]["missing"]) == (2, 2)  # Session and Step010
    assert sum(r["missing"] for r in rows.values()) == 6  # Step002, Step011, Step020: nothing else is ready
    start = time.monotonic()
    status = djdask("status", "many", "--json")
    status_s = time.monotonic() - start
    assert status.returncode == 0, status.stderr
    tables = {r["table"]: r for r in json.loads(status.stdout)["tables"]}
    assert len(tables) == 200
    assert {n: t["rows"] for n, t in tables.items() if t["rows"]} == {"Step000": 2, "Step001": 2, "Step010": 2}
    assert all(t["reserved"] == 0 and t["error"] == 0 for t in tables.values())
    print(f"200 tables: djdask plan {plan_s:.1f} s, djdask status {status_s:.1f} s (whole commands)")
