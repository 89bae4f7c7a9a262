"""<xarray@store>: arrays as Zarr in a DataJoint store, on a real S3 server (moto, with
credentials checked) and on a filesystem.

The codec does not depend on the database backend except through the JSON column
that holds each reference, which garbage collection reads: that test runs on both
backends, the others on PostgreSQL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration
postgres_only = pytest.mark.parametrize("server", ["postgres"], indirect=True)

#: The reference pipeline's <xarray@> attributes: (schema suffix, table, attributes).
ARRAYS = [
    ("acquisition", "_scan_movie", ("movie", "true_shifts")),
    ("imaging", "__motion_correction", ("shifts", "mean_image")),
    ("imaging", "__segmentation", ("summary_image", "masks")),
    ("imaging", "__traces", ("traces",)),
]

READ_BACK = """
import json, sys
import numpy as np, xarray as xr
import djdask.pipeline as pipeline
from djdask.storage.codec import verify
opts = json.loads(sys.argv[1])
out = {"verified": 0, "plain": 0, "lazy": 0}
for table in (pipeline.ScanMovie, pipeline.MotionCorrection, pipeline.Segmentation, pipeline.Traces):
    attrs = [a for a in table.heading.schema_objects]
    for i, row in enumerate(table.proj(*attrs).cursor(as_dict=True)):
        for a in attrs:
            stored = row[a] if isinstance(row[a], dict) else json.loads(row[a])
            key = {k: row[k] for k in table.primary_key}
            value = (table & key).fetch1(a)
            out["lazy"] += value.chunks is not None
            assert verify(value, stored), (table.__name__, a, key)
            out["verified"] += 1
            if i >= 2:
                continue  # moto is slow: the first two rows of each table are enough for what follows
            # Without djdask or DataJoint: xarray and s3fs on the stored path.
            plain = xr.open_zarr(f"s3://{opts['bucket']}/{opts['prefix']}/{stored['path']}", consolidated=False,
                                 storage_options=opts["storage"])
            name = stored["name"]
            np.testing.assert_array_equal(plain[name].values, value.values)
            out["plain"] += 1
print(json.dumps(out))
"""


def s3_env(djdask, s3, bucket, prefix, **extra):
    stores = {"default": "djdask-s3", "djdask-s3": s3.store_spec(bucket, prefix)}
    return djdask.env(
        AWS_ENDPOINT_URL=s3.endpoint,
        AWS_ACCESS_KEY_ID=s3.key,
        AWS_SECRET_ACCESS_KEY=s3.secret,
        DJ_STORES=json.dumps(stores),
        **extra,
    )


@postgres_only
def test_reference_pipeline_writes_every_array_to_s3(djdask, sql, prefix, s3_server, tmp_path):
    """`djdask demo --store s3://...`: every array attribute of every row is a Zarr in the
    bucket, reads back equal to its checksum through DataJoint (lazily), and (the first
    two rows of each table) opens with plain xarray.open_zarr on the stored path."""
    bucket = s3_server.bucket(f"b{prefix}".lower())
    env = s3_env(djdask, s3_server, bucket, "lab/arrays")
    result = djdask("demo", "--store", f"s3://{bucket}/lab/arrays", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"s3://{bucket}/lab/arrays" in result.stdout
    assert s3_server.secret not in result.stdout + result.stderr
    fs = s3_server.fs()
    n_refs = 0
    for schema, table, attrs in ARRAYS:
        rows = sql.query(f"SELECT {', '.join(attrs)} FROM {sql.table(f'{prefix}_{schema}', table)}")
        assert rows, f"{table} is empty"
        for row in rows:
            for value in row:
                ref = value if isinstance(value, dict) else json.loads(value)
                assert ref["path"].endswith(".zarr") and ref["checksum"]
                assert fs.exists(f"{bucket}/lab/arrays/{ref['path']}/zarr.json"), ref["path"]
                n_refs += 1
    opts = {
        "bucket": bucket,
        "prefix": "lab/arrays",
        "storage": {
            "key": s3_server.key,
            "secret": s3_server.secret,
            "client_kwargs": {"endpoint_url": s3_server.endpoint},
        },
    }
    import subprocess
    import sys

    read = subprocess.run(
        [sys.executable, "-c", READ_BACK, json.dumps(opts)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert read.returncode == 0, read.stderr
    counts = json.loads(read.stdout.strip().splitlines()[-1])
    plain = sum(
        min(2, len(sql.query(f"SELECT 1 FROM {sql.table(f'{prefix}_{schema}', table)}"))) * len(attrs)
        for schema, table, attrs in ARRAYS
    )
    assert counts == {"verified": n_refs, "plain": plain, "lazy": n_refs}


def bucket_files(s3, bucket):
    return set(s3.fs().find(bucket))


def test_failed_make_leaves_an_orphan_that_gc_removes(djdask, sql, prefix, s3_server):
    """Broken.make() writes its array, then raises: no row, an error row, and a Zarr nobody
    references. `djdask gc --dry-run` lists it and removes nothing; `djdask gc` removes it
    and nothing else (the bucket is listed before and after)."""
    bucket = s3_server.bucket(f"g{prefix}".lower())
    env = s3_env(djdask, s3_server, bucket, "")
    assert djdask.python("import arrays; arrays.Source.insert({'source_id': i} for i in range(3))").returncode == 0
    result = djdask("populate", "arrays", "--target", "Kept", "--target", "Broken", env=env)
    assert result.returncode == 1, result.stdout + result.stderr  # Broken's keys failed
    schema = f"{prefix}_arrays"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__broken')}") == 0
    assert sql.jobs_counts(schema, "__broken") == {"error": 3}
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__kept')}") == 3
    before = bucket_files(s3_server, bucket)
    broken = {f for f in before if "/__broken/" in f}
    kept = before - broken
    assert broken and any("/__kept/" in f for f in kept)

    dry = djdask("gc", "arrays", "--dry-run", "--min-age", "0s", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "3 unreferenced" in dry.stdout and "would remove 3" in dry.stdout
    assert bucket_files(s3_server, bucket) == before

    young = djdask("gc", "arrays", env=env)  # default min age (1 h): too recent to remove
    assert young.returncode == 0 and "kept as younger" in young.stdout
    assert bucket_files(s3_server, bucket) == before

    gc = djdask("gc", "arrays", "--min-age", "0s", env=env)
    assert gc.returncode == 0, gc.stderr
    assert bucket_files(s3_server, bucket) == kept
    again = djdask.python(
        "import arrays, numpy as np\n"
        "for k in arrays.Kept.keys():\n"
        "    v = (arrays.Kept & k).fetch1('data')\n"
        "    np.testing.assert_array_equal(v.values, arrays.small(k).values)\n",
        env=env,
    )
    assert again.returncode == 0, again.stderr


@postgres_only
def test_an_array_larger_than_memory_is_written_chunk_by_chunk(djdask, sql, prefix):
    """A 400 MiB dask-backed movie stored by a worker whose memory limit is 320 MiB (Dask
    restarts a worker past 95% of it): its peak memory grows by far less than the array
    while it is stored; it reads back lazily, one chunk at a time."""
    assert djdask.python("import arrays; arrays.Source.insert1({'source_id': 0})").returncode == 0
    env = djdask.env(DASK_DJDASK__CAMPAIGN__WORKER_MEMORY="320MiB", DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS="1")
    result = djdask("populate", "arrays", "--target", "Big", "--workers", "1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    schema = f"{prefix}_arrays"
    nbytes = sql.scalar(f"SELECT nbytes FROM {sql.table(schema, '__big')}")
    growth = sql.scalar(f"SELECT peak_growth FROM {sql.table(schema, '__big__memory')}")
    assert nbytes == 400 * 512 * 512 * 4
    assert growth < nbytes / 4, f"peak memory grew by {growth} bytes storing {nbytes}"
    print(f"stored {nbytes} bytes; worker peak memory grew by {growth} bytes")
    read = djdask.python(
        "import arrays, dask.array as da\n"
        "v = arrays.Big.fetch1('data')\n"
        "assert isinstance(v.data, da.Array) and v.data.chunks[0][0] == 16, v.data.chunks\n"
        "frame = v.isel(time=100).values\n"
        "expected = da.random.default_rng(0).standard_normal((400, 512, 512), chunks=(16, 512, 512), dtype='float32')\n"
        "assert (frame == expected[100].compute()).all()\n"
    )
    assert read.returncode == 0, read.stderr


def populate_kept(djdask, env) -> subprocess.Popen:
    """`djdask populate arrays --target Kept` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "djdask.cli", "populate", "arrays", "--target", "Kept", "--workers", "2"],
        env=env,
        cwd=djdask.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def behind_proxy(s3_server, bucket: str, store: str):
    """A TCP proxy before the S3 server, and DataJoint stores whose default, ``store``,
    writes to ``bucket`` through it."""
    from tests.services import TcpProxy

    proxy = TcpProxy(("127.0.0.1", int(s3_server.endpoint.rsplit(":", 1)[1])))
    return proxy, {"default": store, store: {**s3_server.store_spec(bucket), "endpoint": proxy.endpoint}}


def wait_for_kept_rows(sql, prefix: str, proc: subprocess.Popen, rows: int, timeout: float = 120) -> str:
    """Until the campaign ``proc`` has made ``rows`` rows of ``Kept``; the table's name."""
    table = sql.table(f"{prefix}_arrays", "__kept")
    deadline = time.monotonic() + timeout
    while "__kept" not in sql.tables(f"{prefix}_arrays") or sql.scalar(f"SELECT COUNT(*) FROM {table}") < rows:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    return table


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@postgres_only
@pytest.mark.parametrize("case", ["unconfigured-store", "not-xarray"])
def test_bad_storage_input_is_an_error_row_naming_the_store(djdask, sql, prefix, s3_server, case):
    """A table whose own store is not configured, or a make() that returns no xarray: the key's
    error row names the store (or the type) and the fix; no row is inserted and nothing is left
    in the bucket."""
    bucket = s3_server.bucket(f"e{prefix}{case.replace('-', '')}"[:60].lower())
    target, env = "Kept", s3_env(djdask, s3_server, bucket, "")
    if case == "unconfigured-store":
        target, fragments = "Elsewhere", ["store 'nosuchstore'", "dj.config['stores']['nosuchstore']"]
    else:
        target, fragments = "NotXarray", ["xarray.Dataset or xarray.DataArray, got ndarray", "dims="]
    assert djdask.python("import arrays; arrays.Source.insert1({'source_id': 1})").returncode == 0
    result = djdask("populate", "arrays", "--target", target, "--workers", "1", env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    schema = f"{prefix}_arrays"
    table = {"Kept": "__kept", "Elsewhere": "__elsewhere", "NotXarray": "__not_xarray"}[target]
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, table)}") == 0
    message = sql.scalar(f"SELECT error_message FROM {sql.table(schema, '~~' + table.lstrip('_'))}")
    for fragment in fragments:
        assert fragment in message, message
    assert bucket_files(s3_server, bucket) == set()


@postgres_only
@pytest.mark.parametrize("case", ["missing-bucket", "wrong-credentials", "unreachable", "bad-bucket-name"])
def test_a_store_that_cannot_be_written_stops_the_campaign_first(djdask, sql, prefix, s3_server, s3_auth_server, case):
    """The store is probed (one object written and deleted) before anything else: a missing
    bucket, wrong credentials, an endpoint nobody answers on or a malformed bucket name is
    exit 2 with what is wrong and the fix; no jobs table is created, no key reserved, nothing
    written to the bucket, no secret shown."""
    assert djdask.python("import arrays; arrays.Source.insert1({'source_id': 1})").returncode == 0
    schema = f"{prefix}_arrays"
    before = {t: sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, t)}") for t in sql.tables(schema)}
    bucket = f"m{prefix}{case.replace('-', '')}"[:60].lower()
    server, args, secret = s3_server, ["--store", f"s3://{bucket}/arrays"], s3_server.secret
    endpoint = server.endpoint
    if case == "missing-bucket":  # never created
        fragments = [f"s3://{bucket}/arrays", "cannot be written", f"Create the bucket '{bucket}'"]
    elif case == "wrong-credentials":
        server, secret = s3_auth_server, "not-the-secret"
        endpoint = server.endpoint
        s3_auth_server.bucket(bucket)
        fragments = ["cannot be written", "Access Key Id you provided does not exist", "Check the credentials"]
    elif case == "unreachable":
        endpoint = f"http://127.0.0.1:{closed_port()}"
        fragments = ["cannot be written", f"at {endpoint}", "Check the endpoint", "reachable from here"]
    else:
        args = ["--store", "s3://My_Bucket/x"]
        fragments = ["--store 's3://My_Bucket/x' names no valid bucket", "lower-case"]
    env = djdask.env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=server.key if case != "wrong-credentials" else "AKIANOSUCHKEY",
        AWS_SECRET_ACCESS_KEY=server.secret if case != "wrong-credentials" else secret,
        AWS_MAX_ATTEMPTS="2",
    )
    result = djdask("populate", "arrays", "--target", "Kept", "--workers", "1", *args, env=env, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("djdask: "), result.stderr
    text = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in text, text
    assert secret not in result.stdout + result.stderr
    assert {t: sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, t)}") for t in sql.tables(schema)} == before
    if case == "wrong-credentials":
        assert bucket_files(s3_auth_server, bucket) == set()


@postgres_only
def test_a_store_gone_for_good_fails_the_keys_that_need_it(djdask, sql, prefix, s3_server):
    """The S3 endpoint stops answering after the campaign started and does not come back: each
    key that writes to it waits up to the outage tolerance (3 s here), then is an error row
    naming the store; the campaign ends (exit 1) with nothing left reserved."""
    from tests.services import TcpProxy

    n = 12
    bucket = s3_server.bucket(f"f{prefix}".lower())
    proxy = TcpProxy(("127.0.0.1", int(s3_server.endpoint.rsplit(":", 1)[1])))
    stores = {"default": "far", "far": {**s3_server.store_spec(bucket), "endpoint": proxy.endpoint}}
    env = djdask.env(
        DJ_STORES=json.dumps(stores),
        AWS_MAX_ATTEMPTS="2",
        DJDASK_TEST_MAKE_SECONDS="0.3",
        DASK_DJDASK__CAMPAIGN__OUTAGE_TOLERANCE="3s",
    )
    assert djdask.python(f"import arrays; arrays.Source.insert({{'source_id': i}} for i in range({n}))").returncode == 0
    proc = populate_kept(djdask, env)
    table, jobs = sql.table(f"{prefix}_arrays", "__kept"), sql.table(f"{prefix}_arrays", "~~kept")
    deadline = time.monotonic() + 120
    while "__kept" not in sql.tables(f"{prefix}_arrays") or sql.scalar(f"SELECT COUNT(*) FROM {table}") < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proxy.down()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, out + err
    made = sql.scalar(f"SELECT COUNT(*) FROM {table}")
    errors = sql.scalar(f"SELECT COUNT(*) FROM {jobs} WHERE status = 'error'")
    assert made + errors == n and errors > 0, (made, errors)
    message = sql.scalar(f"SELECT error_message FROM {jobs} WHERE status = 'error' LIMIT 1")
    for fragment in ["object store unreachable for", "could not write", "store 'far'"]:
        assert fragment in message, message
    assert sql.scalar(f"SELECT COUNT(*) FROM {jobs} WHERE status = 'reserved'") == 0


@postgres_only
def test_an_object_store_outage_is_waited_out(djdask, sql, prefix, s3_server):
    """The S3 endpoint stops answering for 15 s while keys write their arrays: the keys that
    tried are tried again once it is back, uncharged, and the campaign ends with every row
    made, no error row, nothing reserved, and every array readable."""
    n = 40
    proxy, stores = behind_proxy(s3_server, s3_server.bucket(f"o{prefix}".lower()), "flaky")
    env = djdask.env(
        DJ_STORES=json.dumps(stores),
        AWS_MAX_ATTEMPTS="2",
        DJDASK_TEST_MAKE_SECONDS="0.2",
        DASK_DJDASK__STORAGE__WRITE_TIMEOUT="20s",  # a write left waiting by the outage is cut off
    )
    assert djdask.python(f"import arrays; arrays.Source.insert({{'source_id': i}} for i in range({n}))").returncode == 0
    proc = populate_kept(djdask, env)
    table = wait_for_kept_rows(sql, prefix, proc, n // 4)
    proxy.down()
    time.sleep(15)
    proxy.up()
    back = time.monotonic()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    print(f"object store down 15 s: campaign finished {time.monotonic() - back:.1f} s after it came back")
    assert "Object store unreachable; keys that write to it wait for it" in err, err  # the path under test ran
    assert sql.scalar(f"SELECT COUNT(*) FROM {table}") == n
    assert sql.jobs_counts(f"{prefix}_arrays", "_kept") == {}
    read = djdask.python(
        "import arrays, numpy as np\n"
        f"for k in range({n}):\n"
        "    v = (arrays.Kept & {'source_id': k}).fetch1('data')\n"
        "    assert np.array_equal(v.values, arrays.small({'source_id': k}).values), k\n",
        env=env,
    )
    assert read.returncode == 0, read.stderr


@postgres_only
def test_a_store_that_stops_answering_is_cut_off_and_waited_for(djdask, sql, prefix, s3_server):
    """The S3 endpoint keeps taking connections and requests but answers nothing for 12 s
    (a stalled proxy): writes waiting on it are cut off after djdask.storage.write-timeout
    instead of hanging their workers, the keys wait for the store, and once it answers
    again every row is made, none is an error, nothing is left reserved."""
    n = 12
    proxy, stores = behind_proxy(s3_server, s3_server.bucket(f"w{prefix}".lower()), "stalling")
    env = djdask.env(
        DJ_STORES=json.dumps(stores), DJDASK_TEST_MAKE_SECONDS="0.2", DASK_DJDASK__STORAGE__WRITE_TIMEOUT="3s"
    )
    assert djdask.python(f"import arrays; arrays.Source.insert({{'source_id': i}} for i in range({n}))").returncode == 0
    proc = populate_kept(djdask, env)
    table = wait_for_kept_rows(sql, prefix, proc, 2)
    proxy.stall()
    time.sleep(12)
    made_while_stalled = sql.scalar(f"SELECT COUNT(*) FROM {table}")
    proxy.unstall()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    assert "the store gave no answer for 3 s" in err, err  # the cut-off ran
    assert "Object store unreachable; keys that write to it wait for it" in err, err
    assert made_while_stalled < n, "the store never stalled a write"
    assert sql.scalar(f"SELECT COUNT(*) FROM {table}") == n
    assert sql.jobs_counts(f"{prefix}_arrays", "_kept") == {}
