"""djdask populate, plan and status on the reference pipeline, on both backends."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

INSERT_DEMO = "from djdask.pipeline.demo import insert_demo_data; insert_demo_data('small')"

#: Each auto-populated table of the reference pipeline: (table, its key source as SQL
#: over the schema's tables, the key attributes).
SCAN_KEY = ["mouse_id", "session_id", "scan_id"]
SEG_KEY = SCAN_KEY + ["seg_param_id"]


def key_sources(sql, prefix):
    acq, img = f"{prefix}_acquisition", f"{prefix}_imaging"
    t = sql.table
    return {
        "ScanMovie": (t(acq, "_scan_movie"), f"SELECT mouse_id, session_id, scan_id FROM {t(acq, 'scan')}", SCAN_KEY),
        "MotionCorrection": (
            t(img, "__motion_correction"),
            f"SELECT mouse_id, session_id, scan_id FROM {t(acq, '_scan_movie')}",
            SCAN_KEY,
        ),
        "Segmentation": (
            t(img, "__segmentation"),
            f"SELECT m.mouse_id, m.session_id, m.scan_id, p.seg_param_id FROM {t(img, '__motion_correction')} m "
            f"CROSS JOIN {t(img, '#segmentation_params')} p",
            SEG_KEY,
        ),
        "Traces": (
            t(img, "__traces"),
            f"SELECT mouse_id, session_id, scan_id, seg_param_id FROM {t(img, '__segmentation')}",
            SEG_KEY,
        ),
        "CellStats": (
            t(img, "__cell_stats"),
            f"SELECT mouse_id, session_id, scan_id, seg_param_id FROM {t(img, '__traces')}",
            SEG_KEY,
        ),
    }


def missing_count(sql, target, source, key):
    match = " AND ".join(f"t.{k} = s.{k}" for k in key)
    return sql.scalar(f"SELECT COUNT(*) FROM ({source}) s WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {match})")


def _comparable(value):
    """A column value as compared between runs: bytes for blobs, and for an <xarray@>
    reference its content (variables, dims, shapes, dtypes, checksum), not where it is."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, str) and value.startswith("{") and '"checksum"' in value:
        value = json.loads(value)
    if isinstance(value, dict) and "checksum" in value:
        return json.dumps({k: value[k] for k in ("kind", "name", "variables", "size", "checksum")}, sort_keys=True)
    return value


def all_rows(sql, schema):
    """Every row of every table of ``schema`` except the jobs tables, as sorted tuples."""
    out = {}
    for name in sorted(sql.tables(schema)):
        if name.startswith("~"):
            continue
        rows = sql.query(f"SELECT * FROM {sql.table(schema, name)}")
        out[name] = sorted(tuple(_comparable(v) for v in row) for row in rows)
    return out


def assert_same_rows(sql, prefix: str, other: str, what: str) -> None:
    """Every table of the reference pipeline holds the same rows under both prefixes."""
    for schema in ("acquisition", "imaging"):
        ours, theirs = all_rows(sql, f"{prefix}_{schema}"), all_rows(sql, f"{other}_{schema}")
        assert ours.keys() == theirs.keys()
        for table in ours:
            assert ours[table], f"{schema}.{table} is empty"
            assert ours[table] == theirs[table], f"{schema}.{table} differs from {what}"


def populate_as_datajoint(djdask, prefix: str) -> None:
    """The reference pipeline's demo data under schema ``prefix``, made by DataJoint's own
    populate() of each table in order, in a process of its own, as a user would."""
    # One BLAS thread, as distributed gives its worker processes (nanny's pre-spawn
    # environment): OpenBLAS splits a matrix product differently across threads, which
    # changes float32 sums in their last bits (seen: CellStats 8.7131055 vs 8.7131034).
    env = djdask.env(
        DASK_DJDASK__DEMO__SCHEMA_PREFIX=prefix, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"
    )
    code = (
        INSERT_DEMO + "\nimport djdask.pipeline as pipeline\n"
        "for t in (pipeline.ScanMovie, pipeline.MotionCorrection, pipeline.Segmentation, pipeline.Traces, pipeline.CellStats):\n"
        "    t.populate()\n"
    )
    seq = djdask.python(code, env=env)
    assert seq.returncode == 0, seq.stderr


def test_populate_matches_datajoint_sequential_populate(djdask, sql, prefix):
    """djdask and DataJoint's own populate() must produce the same keys and values in every table;
    a difference means djdask ran make() with other inputs, skipped keys or wrote twice."""
    assert djdask.python(INSERT_DEMO).returncode == 0
    result = djdask("populate", "djdask.pipeline", "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr

    other = f"{prefix}seq"
    populate_as_datajoint(djdask, other)
    assert_same_rows(sql, prefix, other, "DataJoint's populate")
    # Parts were filled too: segmentation cells and traces.
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_imaging', '__traces__trace')}") > 0


def test_plan_and_status_counts_match_sql(djdask, sql, prefix):
    """plan's missing counts and status's rows/pending/reserved/error must equal what SQL counts;
    a mismatch means users are shown a wrong picture of their pipeline."""
    assert djdask.python(INSERT_DEMO).returncode == 0
    partial = djdask("populate", "djdask.pipeline", "--target", "Segmentation", "-r", "mouse_id=1", "--workers", "1")
    assert partial.returncode == 0, partial.stderr
    # Pending rows made by DataJoint itself, so that status has something to count.
    assert djdask.python("import djdask.pipeline as pipeline; pipeline.ScanMovie.jobs.refresh()").returncode == 0

    plan = djdask("plan", "djdask.pipeline", "--json")
    assert plan.returncode == 0, plan.stderr
    tables = {row["table"]: row for row in json.loads(plan.stdout)["tables"]}
    assert list(tables) == ["ScanMovie", "MotionCorrection", "Segmentation", "Traces", "CellStats"]
    sources = key_sources(sql, prefix)
    for name, (target, source, key) in sources.items():
        assert tables[name]["missing"] == missing_count(sql, target, source, key), name
        assert tables[name]["total"] == sql.scalar(f"SELECT COUNT(*) FROM ({source}) s"), name
    assert tables["ScanMovie"]["missing"] == 4  # mouse 2's scans
    assert tables["Traces"]["missing"] == 8  # mouse 1's segmentations

    restricted = json.loads(
        djdask("plan", "djdask.pipeline", "--json", "-r", "mouse_id=2", "--target", "MotionCorrection").stdout
    )
    assert [r["table"] for r in restricted["tables"]] == ["ScanMovie", "MotionCorrection"]
    assert restricted["tables"][0]["missing"] == 4 and restricted["tables"][0]["total"] == 4

    status = djdask("status", "djdask.pipeline", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["table"]: row for row in json.loads(status.stdout)["tables"]}
    for name, (target, _, _) in sources.items():
        schema, table = target.replace('"', "").replace("`", "").split(".")
        assert rows[name]["rows"] == sql.scalar(f"SELECT COUNT(*) FROM {target}"), name
        counts = sql.jobs_counts(schema, table)
        for status_name in ("pending", "reserved", "error"):
            assert rows[name][status_name] == counts.get(status_name, 0), (name, status_name)
    assert rows["ScanMovie"]["pending"] == 4


def test_failing_make_leaves_error_row_and_exit_1(djdask, sql, prefix):
    """One make() raising must give one error row with message and stack, the other keys
    populated, no reservation left behind, and exit code 1."""
    seed = "import badkey; badkey.Item.insert([{'item_id': i} for i in range(1, 9)])"
    assert djdask.python(seed).returncode == 0
    result = djdask("populate", "badkey", "--workers", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    schema = f"{prefix}_badkey"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__square')}") == 7
    rows = sql.query(f"SELECT item_id, status, error_message, error_stack FROM {sql.table(schema, '~~square')}")
    assert len(rows) == 1
    item_id, status, message, stack = rows[0]
    assert (item_id, status) == (3, "error")
    assert message == "ValueError: item 3 is unlucky"
    assert stack is not None and b"unlucky" in bytes(stack)
    # The terminal names the failure once, with its key (the worker's DataJoint keeps
    # its own copy, without the key, to itself).
    output = result.stdout + result.stderr
    assert output.count("item 3 is unlucky") == 1 and "{'item_id': 3}: ValueError" in output, output
    # DataJoint itself reads the row back, stack included.
    check = djdask.python(
        "import badkey; e = badkey.Square.jobs.errors.to_dicts(); "
        "assert len(e) == 1 and 'Traceback' in e[0]['error_stack'], e"
    )
    assert check.returncode == 0, check.stderr
