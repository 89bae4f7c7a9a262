"""Workers without database access (issue 32), the parts that need no server: what their
jobs carry and what they do not, the import of a pipeline without a connection, which
make()s can be split, and the refusal of the others."""

from __future__ import annotations

import sys
import textwrap

import dask.config
import pytest

from djdask.campaign.split import check_splittable
from djdask.clusters import resolve, without_credentials, without_database
from djdask.errors import DjdaskError
from djdask.planning import load_offline


def test_a_database_none_profile_asks_for_compute_workers_and_gives_them_no_database():
    """The job script of a `database: none` profile starts workers offering `djdask-compute`
    (beside the profile's own resources, in one --resources) and exports DJDASK_DATABASE=none;
    without it, neither."""
    profile = {"kind": "slurm", "cores": 2, "memory": "4GB", "resources": {"GPU": 1}}
    with dask.config.set({"djdask.clusters.nodb": {**profile, "database": "none"}, "djdask.clusters.db": profile}):
        nodb, db = resolve("nodb"), resolve("db")
        script = nodb.kind.script("nodb", nodb.raw)
        plain = db.kind.script("db", db.raw)
    assert "--resources GPU=1,djdask-compute=1" in script, script
    assert "export DJDASK_DATABASE=none" in script, script
    assert "djdask-compute" not in plain and "DJDASK_DATABASE" not in plain, plain


@pytest.mark.parametrize(
    ("value", "expected"), [("none", True), ("None", True), (False, True), (True, False), ("yes", False)]
)
def test_database_none_is_read_as_written(value, expected):
    assert without_database({"database": value}) is expected
    assert without_database({}) is False


def test_jobs_without_database_get_no_credential():
    """DataJoint's and the database clients' settings, stores' keys and anything named like a
    secret are kept from the jobs; djdask's own settings and the batch system's are not;
    `pass-environment` hands on what the profile names."""
    environment = {
        "DJ_HOST": "db.lab.org",
        "DJ_PASS": "hunter2",
        "PGPASSWORD": "x",
        "MYSQL_PWD": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_ACCESS_KEY_ID": "x",
        "LAB_API_TOKEN": "x",
        "DATAJOINT_PASSWORD": "x",
        "DJDASK_TEST_LEDGER": "/tmp/ledger",
        "SLURM_CONF": "/etc/slurm.conf",
        "PATH": "/usr/bin",
        "HOME": "/home/me",
    }
    kept = without_credentials(environment)
    assert kept == {"DJDASK_TEST_LEDGER": "/tmp/ledger", "SLURM_CONF": "/etc/slurm.conf", "PATH": "/usr/bin",
                    "HOME": "/home/me"}  # fmt: skip
    assert without_credentials(environment, ["AWS_ACCESS_KEY_ID"])["AWS_ACCESS_KEY_ID"] == "x"


PIPELINE = """
import datajoint as dj

schema = dj.Schema("{name}")


@schema
class Source(dj.Manual):
    definition = "source_id : int32"


@schema
class Split(dj.Computed):
    definition = "-> Source\\n---\\nvalue : int32"

    def make_fetch(self, key):
        return (key["source_id"],)

    def make_compute(self, key, source_id):
        return (source_id * self.factor(),)

    def factor(self):
        return 3

    def make_insert(self, key, value):
        self.insert1(dict(key, value=value))


@schema
class Plain(dj.Computed):
    definition = "-> Source\\n---\\nvalue : int32"

    def make(self, key):
        self.insert1(dict(key, value=1))


@schema
class Generator(dj.Computed):
    definition = "-> Source\\n---\\nvalue : int32"

    def make(self, key):
        fetched = yield (1,)
        computed = yield (2,)
        yield
"""


@pytest.fixture
def offline_module(tmp_path, monkeypatch):
    """A pipeline module imported with no database reachable (DJ_HOST a closed port)."""
    name = f"offline_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PIPELINE.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DJ_HOST", "127.0.0.1")
    monkeypatch.setenv("DJ_PORT", "9")
    yield name
    sys.modules.pop(name, None)


def test_a_pipeline_imports_without_a_database_and_its_make_compute_runs(offline_module):
    """Imported where no database is (a compute node), a module's Computed tables are found by
    (schema, table) and a tripartite make_compute runs, self included; DataJoint's own
    schema decorator works again afterwards (it refuses to connect to the closed port)."""
    tables = load_offline(offline_module)
    assert set(tables) == {(offline_module, "__split"), (offline_module, "__plain"), (offline_module, "__generator")}
    split = tables[(offline_module, "__split")]
    assert split().make_compute({"source_id": 2}, 2) == (6,)
    import datajoint as dj

    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises: it tried to connect
        dj.Schema(offline_module + "_online")


def test_only_datajoints_tripartite_make_is_split(offline_module):
    """make_fetch/make_compute/make_insert driven by DataJoint's make can be split; a plain
    make(key) or a generator make of the user's cannot, and is refused with the table, the
    pool and both ways out."""
    tables = {table: cls for (_, table), cls in load_offline(offline_module).items()}
    check_splittable("Split", tables["__split"], "compute", "nodb")
    for name in ("Plain", "Generator"):
        with pytest.raises(DjdaskError) as refused:
            check_splittable(name, tables[f"__{name.lower()}"], "compute", "nodb")
        said = str(refused.value)
        assert f"Table {name} is routed to pool 'compute' (profile 'nodb')" in said
        assert "make_compute" in said and f"djdask.campaign.pools.{name}" in said and "Nothing was written" in said


def test_a_kubernetes_profile_without_database_gives_its_workers_no_secret():
    """A kubernetes profile with `database: none`: its worker pods get neither the Secret nor
    a DJ_* setting, they are told DJDASK_DATABASE=none and offer djdask-compute; the
    scheduler keeps the Secret (the manifest is checked offline: no API server runs here)."""
    import yaml

    profile = {
        "kind": "kubernetes",
        "image": "ghcr.io/mylab/pipeline:1.2",
        "cores": 2,
        "memory": "8G",
        "resources": {"GPU": 1},
        "secret": "datajoint-credentials",
        "env": {"DJ_HOST": "db.lab.svc", "OMP_NUM_THREADS": "1"},
        "database": "none",
    }
    with dask.config.set({"djdask.clusters.k8s-nodb": profile}):
        p = resolve("k8s-nodb")
        p.validate()
        spec = yaml.safe_load(p.kind.script("k8s-nodb", p.raw))
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert "envFrom" not in worker and scheduler["envFrom"] == [{"secretRef": {"name": "datajoint-credentials"}}]
    assert worker["env"] == [{"name": "OMP_NUM_THREADS", "value": "1"}, {"name": "DJDASK_DATABASE", "value": "none"}]
    args = worker["args"]
    assert args[args.index("--resources") + 1] == "GPU=1,djdask-compute=1"
