"""Fidelity (issue 18): a DataJoint pipeline, unchanged, gives under ``djdask populate``
exactly what DataJoint's own sequential ``populate()`` gives.

Each test seeds the same data under two schema prefixes, populates one with
``djdask populate`` and the other with ``Table.populate()`` in dependency order (in
a subprocess, as a user would), and compares every table and part row for row.
The pipelines are in ``tests/pipelines/fidelity*.py`` and
``tests/pipelines/threadsafe_pipeline.py``.  Both backends.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import on_one_backend
from tests.integration.test_populate import _comparable

pytestmark = pytest.mark.integration

#: Hidden job-metadata columns that hold wall-clock values, left out of comparisons
#: (``_job_version`` is compared).
TIMING_COLUMNS = ("_job_start_time", "_job_duration")

#: The schemas of each test pipeline module (suffixes of the prefix).
SCHEMAS = {
    "fidelity": "fidelity",
    "fidelity_arrays": "fidelity_arrays",
    "fidelity_random": "fidelity_random",
    "fidelity_kwargs": "fidelity_kwargs",
    "fidelity_newkey": "fidelity_newkey",
    "threadsafe_pipeline": "threadsafe",
}

#: fidelity.py's auto-populated tables: SQL name and primary key.
FIDELITY_TABLES = {
    "Preprocessed": ("__preprocessed", ["subject_id", "session_id"]),
    "Filtered": ("__filtered", ["subject_id", "session_id", "filter_id"]),
    "Segmentation": ("__segmentation", ["subject_id", "session_id"]),
    "Traces": ("__traces", ["subject_id", "session_id"]),
    "Summary": ("__summary", ["subject_id", "session_id"]),
    "Pairing": ("__pairing", ["first_id", "second_id"]),
}


# -- helpers ----------------------------------------------------------------------
def table_rows(sql, schema: str) -> dict[str, list[tuple]]:
    """Every row of every table of ``schema`` but the jobs tables, as sorted tuples of
    comparable values, without the wall-clock job-metadata columns."""
    out = {}
    for name in sorted(sql.tables(schema)):
        if name.startswith("~"):
            continue
        with sql.conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {sql.table(schema, name)}")
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        keep = [i for i, c in enumerate(columns) if c not in TIMING_COLUMNS]
        out[name] = sorted((tuple(_comparable(row[i]) for i in keep) for row in rows), key=repr)
    return out


def assert_same(sql, module: str, ours: str, theirs: str, nonempty=()) -> dict[str, list[tuple]]:
    """Every table and part of ``module``'s schema holds the same rows under both prefixes;
    the tables named in ``nonempty`` hold some (so that the comparison says something)."""
    schema = SCHEMAS[module]
    mine, other = table_rows(sql, f"{ours}_{schema}"), table_rows(sql, f"{theirs}_{schema}")
    assert mine.keys() == other.keys()
    for table in nonempty:
        assert mine[table], f"{module}.{table} is empty after djdask populate"
        assert other[table], f"{module}.{table} is empty after DataJoint's populate"
    for table in mine:
        missing = [r for r in other[table] if r not in mine[table]]
        extra = [r for r in mine[table] if r not in other[table]]
        assert mine[table] == other[table], (
            f"{module}.{table} differs from DataJoint's populate(): {len(missing)} of its rows missing or "
            f"different, {len(extra)} rows not in it; e.g. missing {missing[:2]!r}, extra {extra[:2]!r}"
        )
    return mine


class Runs:
    """The same pipeline under two prefixes: ``djdask`` (ours) and DataJoint's (theirs)."""

    def __init__(self, djdask, module: str, **env: str) -> None:
        self.djdask, self.module = djdask, module
        self.other = djdask.prefix + "seq"
        self.ours_env = djdask.env(**env)
        self.theirs_pending: list[str] = []  # code both() left for DataJoint's side
        # One BLAS thread, as distributed gives its worker processes (see test_populate).
        self.theirs_env = djdask.env(
            DASK_DJDASK__DEMO__SCHEMA_PREFIX=self.other,
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            **env,
        )

    def ours(self, code: str) -> subprocess.CompletedProcess:
        return self.djdask.python(f"import {self.module} as m\n{code}", env=self.ours_env)

    def theirs(self, code: str) -> subprocess.CompletedProcess:
        """``code`` under DataJoint's prefix, after what :meth:`both` left for this side."""
        code, self.theirs_pending = "\n".join([*self.theirs_pending, code]), []
        return self.djdask.python(f"import {self.module} as m\n{code}", env=self.theirs_env)

    def both(self, code: str) -> None:
        """``code`` on both sides: on ours now, on DataJoint's with its next run (one Python
        and DataJoint start-up less; nothing reads DataJoint's side before that run)."""
        result = self.ours(code)
        assert result.returncode == 0, result.stdout + result.stderr
        self.theirs_pending.append(code)

    def cli(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
        result = self.djdask(*args, env=self.ours_env)
        if expect is not None:
            assert result.returncode == expect, (
                f"djdask {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def populate(self, *args: str, expect: int | None = 0, workers: int = 1) -> subprocess.CompletedProcess:
        """``djdask populate``; one worker unless the test needs more (the suite is CPU-bound,
        and a worker process costs two seconds of CPU to start)."""
        return self.cli("populate", self.module, "--workers", str(workers), *args, expect=expect)

    def sequential(self, populate_args: str = "display_progress=False", before: str = "") -> dict:
        """DataJoint's populate() of every auto-populated table in dependency order;
        returns the error list of each, by table name."""
        code = (
            f"import json\n{before}\nerrors = {{}}\n"
            "for t in m.AUTO:\n"
            f"    r = t.populate({populate_args})\n"
            "    errors[t.__name__] = [[k, str(e)] for k, e in r['error_list']]\n"
            "print('ERRORS=' + json.dumps(errors, default=str))\n"
        )
        result = self.theirs(code)
        assert result.returncode == 0, "DataJoint's own populate() failed: " + result.stdout + result.stderr
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith("ERRORS="))
        return json.loads(line[len("ERRORS=") :])

    def same(self, sql, nonempty=()) -> dict:
        assert not self.theirs_pending, "DataJoint's side has not run yet: call sequential() or theirs() first"
        return assert_same(sql, self.module, self.djdask.prefix, self.other, nonempty)

    def schema(self, prefix: str | None = None) -> str:
        return f"{prefix or self.djdask.prefix}_{SCHEMAS[self.module]}"


def jobs_rows(sql, schema: str, table: str, columns: str = "*") -> list[tuple]:
    name = "~~" + table.lstrip("_")
    if name not in sql.tables(schema):
        return []
    return sql.query(f"SELECT {columns} FROM {sql.table(schema, name)}")


# -- the pipelines ------------------------------------------------------------------
def test_fidelity_pipeline_matches_sequential_populate(djdask, sql):
    """Custom key_source, parts, aliased foreign keys, a tripartite make, blobs and four
    Computed levels: djdask must make the same keys with the same values as populate().
    A difference means djdask chose other keys (key_source, renamed attributes), ran a
    make with other inputs, lost parts, or wrote blobs differently."""
    runs = Runs(djdask, "fidelity")
    runs.both("m.seed()")
    runs.populate()
    assert runs.sequential() == {t: [] for t in FIDELITY_TABLES}
    rows = runs.same(sql, nonempty=[t for t, _ in FIDELITY_TABLES.values()] + ["__segmentation__cell"])
    assert len(rows["__filtered"]) == 9 * 2  # the 9 good sessions x the 2 lowpass filters
    assert len(rows["__pairing"]) == 16


def test_group_commit_matches_sequential_populate_with_its_job_metadata(djdask, sql):
    """Every table of the fidelity pipeline that may (all but the tripartite Traces) made with
    group commit: the same rows and parts as populate(), each row's hidden job metadata
    (version, duration) the same as its jobs row's, as DataJoint stamps them. A failure
    means a grouped make() ran without what _populate1 sets around it (inserts allowed,
    upstream, provenance), or its metadata were not stamped inside the group."""
    grouped = [name for name in FIDELITY_TABLES if name != "Traces"]
    runs = Runs(
        djdask,
        "fidelity",
        DJ_JOBS_ADD_JOB_METADATA="true",
        DJ_JOBS_KEEP_COMPLETED="true",
        DASK_DJDASK__CAMPAIGN__GROUP_COMMIT=json.dumps(grouped),
    )
    runs.both("m.seed()")
    runs.populate("--json-summary", "summary.json")
    made = json.loads((djdask.cwd / "summary.json").read_text())["tables"]
    assert sorted(t["table"] for t in made if t["group_commit"] and t["succeeded"]) == sorted(grouped)
    assert runs.sequential() == {t: [] for t in FIDELITY_TABLES}
    runs.same(sql, nonempty=[t for t, _ in FIDELITY_TABLES.values()] + ["__segmentation__cell"])
    schema = runs.schema()
    for name in grouped:
        table, pk = FIDELITY_TABLES[name]
        on = " AND ".join(f"t.{k} = j.{k}" for k in pk)
        rows = sql.query(
            f"SELECT t._job_version, t._job_duration, t._job_start_time, j.version, j.duration, j.status "
            f"FROM {sql.table(schema, table)} t LEFT JOIN {sql.table(schema, '~~' + table.lstrip('_'))} j ON {on}"
        )
        assert rows, name
        for version, duration, started, job_version, job_duration, status in rows:
            assert status == "success" and started is not None, (name, status, started)
            assert version == job_version, (name, version, job_version)
            assert abs(float(duration) - float(job_duration)) <= 1e-6, (name, duration, job_duration)


def test_tripartite_with_xarray_matches_and_rejects_changed_fetch(djdask, sql):
    """Tripartite makes reading an upstream <xarray@>: the unchanged keys must be made as
    populate() makes them (the two fetches of a lazy array compare equal), and the key
    whose upstream array changes between the fetches must fail "Referential integrity
    failed" in both, with an error row in djdask's jobs table. A difference means djdask
    skips DataJoint's second fetch and its comparison, or the array fetch is unstable."""
    runs = Runs(djdask, "fidelity_arrays")
    runs.both("m.seed()")
    result = runs.populate(expect=1)
    errors = runs.sequential("display_progress=False, suppress_errors=True")
    assert [k for k, _ in errors["ClipCheck"]] == [{"recording_id": 3}], errors
    assert "Referential integrity failed" in errors["ClipCheck"][0][1]
    assert errors["Movie"] == errors["MovieStats"] == errors["Clip"] == []

    rows = runs.same(sql, nonempty=["__movie", "__movie_stats", "__clip", "__clip_check"])
    assert len(rows["__movie_stats"]) == 6 and len(rows["__clip_check"]) == 5
    error_rows = jobs_rows(sql, runs.schema(), "__clip_check", "recording_id, status, error_message")
    assert [(r[0], r[1]) for r in error_rows] == [(3, "error")], (error_rows, result.stdout + result.stderr)
    assert error_rows[0][2].startswith("DataJointError: Referential integrity failed"), error_rows
    for table in ("__movie", "__movie_stats", "__clip"):
        assert not [r for r in jobs_rows(sql, runs.schema(), table, "status") if r[0] == "error"], table


@on_one_backend("postgres")
def test_global_random_seeding_on_busy_worker(djdask, sql):
    """A make() that seeds the global `random` and `numpy.random` from its key and draws
    between waits must give populate()'s draws on a busy Dask worker (batches of many
    keys, several tasks in flight). A difference means something else in the worker
    process (dask's sizeof sampling a long list with random.sample while the campaign
    gathers a result, compression sampling) drew from the generator make() owns."""
    runs = Runs(djdask, "fidelity_random")
    runs.both("m.seed(200)")
    summary = djdask.cwd / "random-summary.json"
    runs.populate("--json-summary", str(summary), workers=2)
    assert runs.sequential() == {"Simulation": []}
    runs.same(sql, nonempty=["__simulation"])
    # The premise: the worker was busy, with batches of more than 10 keys (what dask's
    # sizeof samples) and several tasks.
    (table,) = json.loads(summary.read_text())["tables"]
    assert table["largest_batch"] > 10 and table["tasks"] > 4, table


def test_keep_completed_remakes_deleted_rows_with_metadata_from_one_place(djdask, sql):
    """With jobs.keep_completed, a key whose result rows were deleted still has its
    `success` jobs row; a later campaign must make it again, as DataJoint's refresh()
    re-pends such keys. With jobs.add_job_metadata and version_method=git, each made row's
    hidden `_job_version` must equal its jobs row's `version` (the short commit) and
    `_job_duration` its jobs row's `duration`, as DataJoint stamps both from one
    measurement. A failure means djdask trusts stale success rows and leaves holes in
    the results, or stamps the jobs table from its own clock or version."""
    cwd = djdask.cwd
    git = ["git", "-c", "user.name=djdask-test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=cwd, check=True)
    (cwd / "README").write_text("fidelity\n")
    subprocess.run([*git, "add", "README"], cwd=cwd, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], cwd=cwd, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()
    runs = Runs(
        djdask, "fidelity", DJ_JOBS_KEEP_COMPLETED="true", DJ_JOBS_ADD_JOB_METADATA="true", DJ_JOBS_VERSION_METHOD="git"
    )
    runs.both("m.seed()")
    delete = (
        "(m.Segmentation & 'subject_id = 2').delete(prompt=False)\n(m.Pairing & 'first_id = 1').delete(prompt=False)\n"
    )
    runs.populate()
    result = runs.ours(delete)
    assert result.returncode == 0, result.stderr
    # DataJoint's semantics, the premise of the test: the success rows stay.
    statuses = jobs_rows(sql, runs.schema(), "__segmentation", "subject_id, status")
    assert sorted(s for sid, s in statuses if sid == 2) == ["success"] * 3, statuses
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(runs.schema(), '__segmentation')} WHERE subject_id = 2") == 0
    runs.populate()

    runs.sequential("display_progress=False, reserve_jobs=True")
    result = runs.theirs(delete)
    assert result.returncode == 0, result.stderr
    runs.sequential("display_progress=False, reserve_jobs=True")

    rows = runs.same(sql, nonempty=[t for t, _ in FIDELITY_TABLES.values()])
    assert len([r for r in rows["__segmentation"] if r[0] == 2]) == 3
    for name, (table, _) in FIDELITY_TABLES.items():
        ours = sql.jobs_counts(runs.schema(), table)
        theirs = sql.jobs_counts(runs.schema(runs.other), table)
        assert ours == theirs == {"success": len(rows[table])}, (name, ours, theirs)

    for prefix, who in ((runs.other, "DataJoint's populate"), (djdask.prefix, "djdask")):
        schema = runs.schema(prefix)
        for name, (table, pk) in FIDELITY_TABLES.items():
            jobs = "~~" + table.lstrip("_")
            on = " AND ".join(f"t.{k} = j.{k}" for k in pk)
            rows = sql.query(
                f"SELECT t._job_version, t._job_duration, j.version, j.duration, j.status "
                f"FROM {sql.table(schema, table)} t LEFT JOIN {sql.table(schema, jobs)} j ON {on}"
            )
            assert rows, (who, name)
            for version, duration, job_version, job_duration, status in rows:
                assert status == "success", (who, name, status)
                assert version == job_version == commit, (who, name, version, job_version, commit)
                assert duration is not None and job_duration is not None, (who, name)
                assert abs(float(duration) - float(job_duration)) <= 1e-6, (who, name, duration, job_duration)


def test_deleted_upstream_rows_and_ignored_keys(djdask, sql):
    """Keys enqueued (pending) whose upstream rows are then deleted must not be made (no
    error rows) nor left pending; ignore rows stay; results equal populate() on the final
    data. `djdask ignore -r` must mark the matching missing keys `ignore` as
    `jobs.ignore(key)` does, populate skip them (and what depends on them) and status
    count them. A failure means djdask runs keys that left the key source (make() fails
    on missing upstream rows), leaves dead pending rows that other workers will pick up,
    makes ignored keys, or marks them otherwise than DataJoint."""
    runs = Runs(djdask, "fidelity")
    runs.both("m.seed()")
    marked = runs.cli("ignore", "fidelity", "--table", "Preprocessed", "-r", "subject_id=2")
    delete = (
        "(m.Subject & 'subject_id = 3').delete(prompt=False)\n"
        "(m.Session & {'subject_id': 1, 'session_id': 2}).delete(prompt=False)\n"
    )
    runs.populate("--target", "Segmentation")
    enqueue = runs.ours(
        "for t in m.AUTO:\n    t.jobs.refresh()\nm.Traces.jobs.ignore({'subject_id': 3, 'session_id': 1})\n"
    )
    assert enqueue.returncode == 0, enqueue.stderr
    assert sql.jobs_counts(runs.schema(), "__traces").get("pending") == 8  # 12 sessions, 3 ignored, 1 ignore row
    assert sql.jobs_counts(runs.schema(), "__pairing").get("pending") == 16
    result = runs.ours(delete)
    assert result.returncode == 0, result.stderr
    runs.populate()

    for name, (table, _) in FIDELITY_TABLES.items():
        counts = sql.jobs_counts(runs.schema(), table)
        assert counts.get("error", 0) == 0, (name, jobs_rows(sql, runs.schema(), table))
        assert counts.get("pending", 0) == 0, (name, counts)
    ignored = jobs_rows(sql, runs.schema(), "__traces", "subject_id, session_id, status")
    assert ignored == [(3, 1, "ignore")], ignored
    status = json.loads(runs.cli("status", "fidelity", "--json").stdout)
    rows_by_table = {r["table"]: r for r in status["tables"]}
    assert rows_by_table["Preprocessed"]["ignore"] == 3, (status, marked.stdout)

    result = runs.theirs(delete)
    assert result.returncode == 0, result.stderr
    runs.sequential(
        "display_progress=False, reserve_jobs=True",
        before="for k in (m.Preprocessed.key_source & 'subject_id = 2').keys():\n    m.Preprocessed.jobs.ignore(k)\n"
        "m.Traces.jobs.ignore({'subject_id': 3, 'session_id': 1})\n",
    )
    rows = runs.same(sql, nonempty=[t for t, _ in FIDELITY_TABLES.values()])
    assert not [r for r in rows["__preprocessed"] if r[0] in (2, 3) or r[:2] == (1, 2)]
    columns = "subject_id, session_id, status, priority"
    ours = sorted(jobs_rows(sql, runs.schema(), "__preprocessed", columns))
    theirs = sorted(jobs_rows(sql, runs.schema(runs.other), "__preprocessed", columns))
    assert [r for r in ours if r[2] == "ignore"] == [r for r in theirs if r[2] == "ignore"], (ours, theirs)
    assert len([r for r in ours if r[2] == "ignore"]) == 3, ours


@on_one_backend("mariadb")
def test_make_kwargs_reach_every_make(djdask, sql):
    """`--make-kwargs` must reach make() (and a tripartite make_fetch) as
    populate(make_kwargs=...) passes them. A failure means make() ran with its defaults."""
    runs = Runs(djdask, "fidelity_kwargs")
    runs.both("m.seed()")
    runs.populate("--target", "Offset", "--make-kwargs", '{"scale": 3}')
    runs.sequential("display_progress=False, make_kwargs={'scale': 3}")
    rows = runs.same(sql, nonempty=["__scaled", "__offset"])
    assert {r[-1] for r in rows["__scaled"]} == {3} and {r[-1] for r in rows["__offset"]} == {"scale=3"}


@on_one_backend("mariadb")
def test_priority_outside_jobs_range_is_refused(djdask, sql):
    """DataJoint's jobs priority is int8 and djdask's only jobs of priority <= P run:
    --priority 200 or -1 must exit 2 naming the range 0..127 and write nothing (no jobs
    table); 127 works. A failure means a campaign writes priorities DataJoint's table
    cannot hold (an SQL error mid-campaign) or accepts a meaningless one."""
    runs = Runs(djdask, "fidelity_kwargs")
    runs.both("m.seed()")
    schema = runs.schema()
    for bad in ("200", "-1"):
        result = runs.populate("--priority", bad, expect=2)
        output = result.stdout + result.stderr
        assert "0..127" in output and "Traceback" not in output, output
        assert not [t for t in sql.tables(schema) if t.startswith("~~")], sql.tables(schema)
        assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__scaled')}") == 0
    runs.populate("--priority", "127")
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__scaled')}") > 0
    assert sql.jobs_counts(schema, "__scaled") == {}  # every key made, none left pending


def test_thread_safe_mode_pipeline(djdask, sql):
    """A pipeline written for DataJoint's thread-safe mode (DJ_THREAD_SAFE=true: its own
    dj.Instance, no dj.config, no dj.conn()) must run under djdask as under populate().
    A failure means djdask reaches for the global connection or config, which raise
    in that mode."""
    runs = Runs(djdask, "threadsafe_pipeline", DJ_THREAD_SAFE="true")
    runs.both("m.seed()")
    runs.populate()
    assert runs.sequential() == {"Squared": [], "Profile": []}
    runs.same(sql, nonempty=["__squared", "__profile"])


def test_key_source_not_a_foreign_key_of_target(djdask, sql):
    """A Computed whose primary key is its own field (key_source = Scan, a secondary
    reference) has no DataJoint jobs table: plan must say it runs unreserved, populate
    must make its rows as populate() does without failing the other tables, and a
    second campaign must make nothing new. A failure means djdask cannot run such a
    table, fails the campaign for it, or makes its keys twice."""
    runs = Runs(djdask, "fidelity_newkey", DJ_JOBS_ALLOW_NEW_PK_FIELDS_IN_COMPUTED_TABLES="true")
    runs.both("m.seed()")
    plan = runs.cli("plan", "fidelity_newkey")
    line = next((ln for ln in plan.stdout.splitlines() if ln.startswith("Detection ")), "")
    assert "unreserved" in line, plan.stdout
    tables = {r["table"]: r for r in json.loads(runs.cli("plan", "fidelity_newkey", "--json").stdout)["tables"]}
    assert tables["Detection"].get("reserved") is False, tables
    assert tables["Area"].get("reserved", True) is True and tables["DetectionCount"].get("reserved", True) is True

    runs.populate()
    assert runs.sequential() == {"Area": [], "Detection": [], "DetectionCount": []}
    rows = runs.same(sql, nonempty=["__area", "__detection", "__detection_count"])
    assert len(rows["__detection"]) == 11 and len(rows["__detection_count"]) == 11
    assert "~~detection" not in sql.tables(runs.schema())  # DataJoint cannot declare one

    again = runs.populate()
    rows_again = runs.same(sql)
    assert rows_again == rows, again.stdout
