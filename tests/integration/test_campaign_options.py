"""Campaign options: worker resources, --dry-run, --priority."""

from __future__ import annotations

import json

import pytest

from tests.conftest import on_one_backend

pytestmark = pytest.mark.integration

RESOURCE_RUN = """
import json, sys
from distributed import Client, Nanny, Scheduler, SpecCluster
from djdask import Campaign
from djdask.db.connect import connect

connect()
workers = {
    "cpu-worker": {"cls": Nanny, "options": {"nthreads": 1}},
    "gpu-worker": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
}
cluster = SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}, workers=workers)
client = Client(cluster)
summary = Campaign("gpu", client=client).run()
client.close(); cluster.close()
print(json.dumps(summary.as_dict()))
"""


@on_one_backend("postgres")
def test_tables_needing_resources_run_only_on_workers_that_have_them(djdask, sql, prefix):
    """OnGpu declares GPU: 1, so every one of its keys must be made on the GPU worker; OnAny
    may run anywhere. A row made on the CPU worker means resources were ignored."""
    assert djdask.python("import gpu; gpu.Frame.insert({'frame_id': i} for i in range(12))").returncode == 0
    result = djdask.python(RESOURCE_RUN)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0 and summary["waiting_for_resources"] == []
    schema = f"{prefix}_gpu"
    gpu_workers = dict(sql.query(f"SELECT worker, COUNT(*) FROM {sql.table(schema, '__on_gpu')} GROUP BY worker"))
    assert gpu_workers == {"gpu-worker": 12}
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__on_any')}") == 12


@on_one_backend("mariadb")
def test_missing_resource_leaves_keys_pending_with_a_warning(djdask, sql, prefix):
    """With no worker offering GPU, OnGpu's keys must stay pending, unreserved, and be named."""
    assert djdask.python("import gpu; gpu.Frame.insert({'frame_id': i} for i in range(3))").returncode == 0
    result = djdask("populate", "gpu", "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No worker offers the resources {'GPU': 1} that OnGpu needs" in result.stderr
    assert sql.jobs_counts(f"{prefix}_gpu", "__on_gpu") == {"pending": 3}
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_gpu', '__on_any')}") == 3


@on_one_backend("postgres")
def test_dry_run_prints_the_plan_and_changes_nothing(djdask, sql, prefix):
    assert djdask.python("from djdask.pipeline.demo import insert_demo_data; insert_demo_data('small')").returncode == 0
    result = djdask("populate", "djdask.pipeline", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "missing" in result.stdout and "ScanMovie" in result.stdout
    for schema in (f"{prefix}_acquisition", f"{prefix}_imaging"):
        assert not [t for t in sql.tables(schema) if t.startswith("~~")]


@on_one_backend("mariadb")
def test_priority_limits_what_is_claimed(djdask, sql, prefix):
    """--priority P runs only jobs of priority <= P; more urgent-first, as DataJoint defines it."""
    assert (
        djdask.python(
            "import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2, 4, 5)); "
            "badkey.Square.jobs.refresh(priority=8)"
        ).returncode
        == 0
    )
    jobs = sql.table(f"{prefix}_badkey", "~~square")
    sql.query(f"UPDATE {jobs} SET priority = 2 WHERE item_id IN (1, 2)")
    result = djdask("populate", "badkey", "--priority", "3", "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    made = sorted(r[0] for r in sql.query(f"SELECT item_id FROM {sql.table(prefix + '_badkey', '__square')}"))
    assert made == [1, 2]
    assert sql.jobs_counts(f"{prefix}_badkey", "__square") == {"pending": 2}
