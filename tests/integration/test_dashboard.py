"""The campaign page in a real headless Chromium, the link to it, the performance
report, and the secrets a user types: never on the page, in the published state
or in any log."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ARTIFACTS, DASK_DASHBOARD
from tests.integration.batch_campaigns import campaign_records
from tests.integration.test_jobs_engine import seed_ledger, start_campaign
from tests.integration.test_populate import INSERT_DEMO

pytestmark = pytest.mark.integration

#: The reference pipeline's auto-populated tables: (schema suffix, table name in the database).
REFERENCE_TABLES = {
    "ScanMovie": ("acquisition", "_scan_movie"),
    "MotionCorrection": ("imaging", "__motion_correction"),
    "Segmentation": ("imaging", "__segmentation"),
    "Traces": ("imaging", "__traces"),
    "CellStats": ("imaging", "__cell_stats"),
}

#: Text of the page as a person sees it: Bokeh draws each component in a shadow DOM.
PAGE_TEXT = """
function walk(node) {
  let text = '';
  if (node.shadowRoot) text += walk(node.shadowRoot);
  for (const child of node.childNodes) {
    if (child.nodeType === 3) text += child.textContent + ' ';
    else if (child.nodeType === 1 && !['STYLE', 'SCRIPT'].includes(child.tagName)) text += walk(child);
  }
  return text;
}
return walk(document.body).replace(/\\s+/g, ' ');
"""

#: The rows of the counts table: [[table, rows, made, in flight, pending, errors, ...], ...]
COUNT_ROWS = """
const rows = [];
function walk(node) {
  if (node.shadowRoot) walk(node.shadowRoot);
  for (const child of node.children || []) {
    if (child.tagName === 'TR' && child.dataset.table) rows.push([...child.children].map(td => td.innerText.trim()));
    walk(child);
  }
}
walk(document.body);
return rows;
"""


#: The data of the page's history plots, by table: {"throughput": {table: [keys/s...]}, "durations": ...}
HISTORY_DATA = """
const doc = Bokeh.documents[0];
const out = {};
for (const [key, name] of [["throughput", "djdask-throughput"], ["durations", "djdask-durations"]]) {
  const data = doc.get_model_by_name(name).data;
  out[key] = {};
  data.table.forEach((table, i) => { out[key][table] = Array.from(data.ys[i]); });
}
return out;
"""


#: Every web address a campaign prints (its links end at a space, a quote or a bracket).
HTTP_LINK = re.compile(r"https?://[^\s'\")\]]+")


def answer(url: str) -> int | str:
    """The HTTP status ``url`` answers with, or why it did not answer (refused, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError as err:  # URLError: refused, unreachable, timed out
        return f"{type(err).__name__}: {getattr(err, 'reason', err)}"


def unanswered(text: str) -> dict[str, int | str]:
    """Of the http links in ``text``, those that do not answer 200, with what they answered."""
    links = HTTP_LINK.findall(text)
    assert links, f"no http link printed: {text}"
    return {link: status for link in links if (status := answer(link)) != 200}


def read_until(proc: subprocess.Popen, start: str) -> str:
    """The lines ``proc`` writes to its standard output up to the first that starts with ``start``."""
    lines = []
    while not lines or not lines[-1].startswith(start):
        line = proc.stdout.readline()
        assert line, f"the campaign ended before it printed {start!r}: " + "".join(lines) + proc.communicate()[1]
        lines.append(line)
    return "".join(lines)


def _wait_for_scheduler_file(path, proc) -> dict:
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None, "the scheduler did not start"
        time.sleep(0.2)
    return json.loads(path.read_text())


@contextlib.contextmanager
def remote_cluster(djdask, tmp_path, env) -> Iterator[str]:
    """`dask scheduler` and `dask worker` processes, as on a cluster djdask did not start;
    yields the scheduler's address, and stops them on the way out."""
    procs, address, logs = _start_remote_cluster(djdask, tmp_path, env)
    try:
        yield address
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def _start_remote_cluster(djdask, tmp_path, env) -> tuple[list[subprocess.Popen], str, list]:
    """The processes of :func:`remote_cluster`, its address and its log files."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = [open(tmp_path / "scheduler.log", "w"), open(tmp_path / "workers.log", "w")]
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        subprocess.Popen(
            [
                *dask,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            env=env,
            cwd=tmp_path,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        )
    ]
    address = _wait_for_scheduler_file(scheduler_file, procs[0])["address"]
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--no-dashboard",
            ],
            env=env,
            cwd=tmp_path,
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        )
    )
    return procs, address, logs


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)  # the backend whose user has a password
def test_campaign_page_in_chromium_matches_the_database(djdask, sql, prefix, tmp_path, chromium):
    """The reference pipeline on a running scheduler (the remote case: the campaign
    registers the page's plugin there). At the end Chromium loads the page: every
    table appears, with counts equal to the database's; a screenshot is kept. The
    database password and the S3 secret key are searched for everywhere the
    campaign writes: the page, its JSON, the published state, every log."""
    from distributed import Client

    password = djdask.server.env["DJ_PASS"]
    s3_secret = "Sx9-very+secret/key-" + prefix
    # Arrays go to the local store (moto's S3 is slow); the S3 store the lab also has
    # configured carries the secret into the campaign's and the workers' settings.
    stores = {
        **djdask.stores,
        "archive": {
            "protocol": "s3",
            "endpoint": "http://127.0.0.1:9",
            "bucket": "lab",
            "location": "arrays",
            "access_key": "AKIALAB",
            "secret_key": s3_secret,
        },
    }
    env = djdask.env(
        DJ_STORES=json.dumps(stores), AWS_SECRET_ACCESS_KEY=s3_secret, DASK_DISTRIBUTED__SCHEDULER__PICKLE="True"
    )
    assert djdask.python(INSERT_DEMO, env=env).returncode == 0
    with remote_cluster(djdask, tmp_path, env) as address:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            run_env = {
                **env,
                "DASK_DJDASK__CLUSTERS__REMOTE__KIND": "address",
                "DASK_DJDASK__CLUSTERS__REMOTE__ADDRESS": address,
            }
            result = djdask("populate", "djdask.pipeline", "--cluster", "remote", env=run_env)
            assert result.returncode == 0, result.stdout + result.stderr
            link = re.search(r"Campaign page: +(\S+)", result.stdout)
            assert link and re.search(r"Dask dashboard: http://127\.0\.0\.1:\d+/status", result.stdout)

            chromium.get(link.group(1))
            deadline = time.monotonic() + 30
            while "(finished)" not in chromium.execute_script(PAGE_TEXT):
                assert time.monotonic() < deadline, chromium.execute_script(PAGE_TEXT)[:2000]
                time.sleep(0.5)
            time.sleep(1.5)  # one more refresh of the plot
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            assert chromium.save_screenshot(str(ARTIFACTS / "campaign-page.png"))
            text = chromium.execute_script(PAGE_TEXT)
            rows = {r[0]: r for r in chromium.execute_script(COUNT_ROWS)}
            assert set(rows) == set(REFERENCE_TABLES), text[:2000]
            for table, (schema, name) in REFERENCE_TABLES.items():
                in_db = sql.scalar(f"SELECT COUNT(*) FROM {sql.table(f'{prefix}_{schema}', name)}")
                jobs = sql.jobs_counts(f"{prefix}_{schema}", name)
                _, db_rows, made, in_flight, pending, errors, *_ = rows[table]
                assert in_db > 0 and (int(db_rows), int(made)) == (in_db, in_db), (table, rows[table])
                assert (int(in_flight), int(pending)) == (0, 0), (table, rows[table])
                assert int(errors) == jobs.get("error", 0) == 0, (table, rows[table])
            assert (ARTIFACTS / "campaign-page.png").stat().st_size > 10_000

            # The history: throughput per table over time, make() durations per table (the
            # plots' data in the browser), and the recent campaigns, each linking to its report.
            campaign = re.search(r"Campaign: +([0-9a-f]{8}) ", result.stdout).group(1)
            plotted = chromium.execute_script(HISTORY_DATA)
            assert set(plotted["throughput"]) == set(REFERENCE_TABLES), plotted
            assert all(max(ys) > 0 for ys in plotted["throughput"].values()), plotted
            assert set(plotted["durations"]) == set(REFERENCE_TABLES), plotted
            expected = {t: 8 if t in ("ScanMovie", "MotionCorrection") else 16 for t in REFERENCE_TABLES}
            assert {t: sum(ys) // 2 for t, ys in plotted["durations"].items()} == expected  # bars' outlines
            assert re.search(rf"Recent campaigns .* {campaign} finished ", text), text[-1000:]
            report = urllib.request.urlopen(f"{link.group(1)}/campaigns/{campaign}").read().decode()
            assert f"campaign {campaign} of djdask.pipeline" in report
            assert all(f'data-table="{t}"' in report for t in REFERENCE_TABLES), report

            published = json.dumps(client.get_metadata("djdask"))
            assert '"finished": true' in published
            page_json = urllib.request.urlopen(link.group(1) + "/state.json").read().decode()
            places = {
                "page text": text,
                "page source": chromium.page_source,
                "page JSON": page_json,
                "published state": published,
                "campaign output": result.stdout + result.stderr,
                "scheduler log (Dask)": json.dumps(client.get_scheduler_logs()),
                "worker logs (Dask)": json.dumps(client.get_worker_logs()),
            }
    places["scheduler process output"] = (tmp_path / "scheduler.log").read_text()
    places["worker process output"] = (tmp_path / "workers.log").read_text()
    for where, content in places.items():
        assert content, where
        for secret in (password, s3_secret):
            assert secret not in content, f"a secret appears in the {where}"


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)  # the backend whose user has a password
def test_secrets_in_error_messages_are_masked(djdask, sql, prefix, tmp_path):
    """A make() whose error message quotes the database password and the S3 secret:
    the campaign's log, the published errors and `djdask errors`/`djdask jobs` mask
    them; the rest of the message stays."""
    secret = "Sx9-very+secret/key-" + prefix
    env = djdask.env(AWS_SECRET_ACCESS_KEY=secret)
    assert djdask.python("import leaky; leaky.Source.insert({'src_id': i} for i in range(6))", env=env).returncode == 0
    report = tmp_path / "report.html"
    code = f"""
import json, sys
from distributed import Client, LocalCluster
from djdask.campaign.loop import Campaign
cluster = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
client = Client(cluster)
summary = Campaign("leaky", client=client, performance_report={str(report)!r}).run()
print("STATE", json.dumps(client.get_metadata("djdask")))
print("LOGS", json.dumps([client.get_scheduler_logs(), client.get_worker_logs()]))
print("SUMMARY", summary.errors)
"""
    result = djdask.python(code, env=env)
    assert "SUMMARY 3" in result.stdout, result.stdout + result.stderr
    state = json.loads(result.stdout.split("STATE ", 1)[1].splitlines()[0])
    assert [e["key"] for e in state["errors"]] == ["src_id=1", "src_id=3", "src_id=5"]
    for error in state["errors"]:
        assert "cannot open mysql://" in error["message"] and "********@db.example" in error["message"]
        assert "RuntimeError" in error["traceback"]
    assert [t["errors"] for t in state["tables"]] == [3]
    password = djdask.server.env["DJ_PASS"]
    errors = djdask("errors", "leaky", env=env)
    jobs = djdask("jobs", "leaky", "--status", "error", "--json", env=env)
    assert "Copy: 3 x RuntimeError: cannot open" in errors.stdout and '"src_id": 1' in jobs.stdout
    # The performance report (asked for here) is Dask's, covering the campaign's tasks.
    assert "run_batch" in report.read_text()
    for where, content in {
        "campaign": result.stdout + result.stderr,
        "errors": errors.stdout,
        "jobs": jobs.stdout,
    }.items():
        for value in (password, secret):
            assert value not in content, f"a secret appears in the {where} output"


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_dashboard_link_honours_distributed_dashboard_link(djdask, sql, prefix):
    """`distributed.dashboard.link` (jupyter-server-proxy, SSH tunnels) shapes both links."""
    assert djdask.python("import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2))").returncode == 0
    env = djdask.env(
        DASK_DISTRIBUTED__DASHBOARD__LINK="https://hub.example/user/ana/proxy/{port}/status", **DASK_DASHBOARD
    )
    result = djdask("populate", "badkey", "--workers", "1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = re.search(r"Dask dashboard: https://hub\.example/user/ana/proxy/(\d+)/status", result.stdout)
    assert dashboard, result.stdout
    assert f"Campaign page:  https://hub.example/user/ana/proxy/{dashboard.group(1)}/djdask" in result.stdout


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_a_headless_campaign_loads_no_bokeh_and_still_serves_its_counts(djdask, sql, prefix):
    """djdask.campaign.dask-dashboard false (the tests' default): the LocalCluster djdask starts
    has no Dask dashboard and the campaign's process never imports Bokeh; the campaign page
    says how to turn it on and state.json holds the counts.  The command line names the page,
    not a dashboard that is not there, and so does the campaign's summary (and its record),
    even on a client's cluster the campaign did not start."""
    assert djdask.python("import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2, 3))").returncode == 0
    code = """
import json, sys, urllib.request
from distributed import Client
from djdask import Campaign
from djdask.clusters.profiles import local_cluster
cluster = local_cluster(1, dashboard_address="127.0.0.1:0")
with Client(cluster) as client:
    summary = Campaign("badkey", client=client).run()
    base = client.dashboard_link.rsplit("/", 1)[0]
    page = urllib.request.urlopen(base + "/djdask").read().decode()
    state = json.load(urllib.request.urlopen(base + "/djdask/state.json"))
    try:
        urllib.request.urlopen(base + "/status")
        plots = "served"
    except urllib.error.HTTPError as err:
        plots = err.code
    recorded = urllib.request.urlopen(summary.dashboard_link).status
print("RESULT", json.dumps([summary.errors, "bokeh" in sys.modules, page, state["tables"], plots, recorded]))
cluster.close()
"""
    result = djdask.python(code)
    assert "RESULT " in result.stdout, result.stdout + result.stderr
    errors, bokeh, page, tables, plots, recorded = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert errors == 1 and not bokeh and plots == 404, (errors, bokeh, plots)
    assert recorded == 200, "the campaign records a link that does not answer"
    assert "DASK_DJDASK__CAMPAIGN__DASK_DASHBOARD=true" in page and "djdask/state.json" in page, page
    assert [(t["table"], t["done"], t["errors"]) for t in tables] == [("Square", 2, 1)], tables
    cli = djdask("populate", "badkey", "--workers", "1")
    assert "Campaign page:" in cli.stdout and "Dask dashboard:" not in cli.stdout, cli.stdout + cli.stderr


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
@pytest.mark.parametrize("plots, ssh", [(True, False), (False, True)], ids=["dashboard-here", "headless-over-ssh"])
def test_every_link_a_local_campaign_prints_answers(djdask, sql, prefix, tmp_path, plots, ssh):
    """A LocalCluster campaign: while it runs, every http link it prints, and the one its
    record keeps, answers 200, with Dask's dashboard and headless (where /status is 404, so
    neither prints nor records it).  At this host's console it prints no tunnel; in an SSH
    session, the tunnel to this host and the links' port.  Wrong if this fails: a printed or
    recorded link that is refused or 404, or a tunnel missing or to another port."""
    seed_ledger(djdask, 12)  # 12 s of work for two workers: the links are tried while it runs
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"),
        DJDASK_TEST_MAKE_SECONDS="2",
        PYTHONUNBUFFERED="1",
        **(DASK_DASHBOARD if plots else {}),
    )
    env.pop("SSH_CONNECTION", None)
    if ssh:
        env["SSH_CONNECTION"] = "192.0.2.9 50022 192.0.2.2 22"  # as sshd sets it: client, then this host
    proc = start_campaign(env, djdask.cwd)
    try:
        printed = read_until(proc, "Campaign page:")
        assert not unanswered(printed), (unanswered(printed), printed)
        assert ("Dask dashboard:" in printed) == plots, printed
        port = re.search(r"Campaign page:  http://127\.0\.0\.1:(\d+)/djdask", printed)
        assert port, printed
        if ssh:
            printed += read_until(proc, "From elsewhere:")
            assert f"From elsewhere: ssh -L {port.group(1)}:127.0.0.1:{port.group(1)} " in printed, printed
        deadline = time.monotonic() + 30
        while not (record := campaign_records(djdask, env)[0])["dashboard"]:
            assert time.monotonic() < deadline, f"the record keeps no link: {record}"
            time.sleep(0.3)
        recorded = answer(record["dashboard"])
        assert proc.poll() is None, "the campaign ended before its links were tried: their answers prove nothing"
        assert recorded == 200, (record["dashboard"], recorded)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, printed + out + err
    if not ssh:
        assert "From elsewhere:" not in printed + out, "a tunnel printed for a user at this host's console"


def test_page_without_bokeh_says_how_to_install_it(tmp_path):
    """A scheduler whose Python has no Bokeh: the page says how to install it, and the
    state is still served as JSON."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    code = (
        "import sys; sys.modules['bokeh'] = None; sys.argv[0] = 'dask-scheduler'; "
        "from distributed.cli.dask_scheduler import main; main()"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        info = _wait_for_scheduler_file(scheduler_file, proc)
        from djdask.monitor.dashboard import DashboardPlugin

        with Client(info["address"], timeout=30) as client:
            client.register_plugin(DashboardPlugin(), name=DashboardPlugin.name)
            port = client.scheduler_info()["services"]["dashboard"]
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/djdask").read().decode()
            assert 'pip install "bokeh>=3.1"' in page and "djdask status MODULE" in page
            served = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/djdask/state.json"))
            assert served["tables"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_unwritable_performance_report(djdask, sql, prefix, tmp_path):
    """A performance report that cannot be written (a file stands where its directory should
    be): the command line refuses it before anything happens (exit 2, no key made); through
    the Python API the campaign runs, and a warning names the file instead of a traceback."""
    assert djdask.python("import badkey; badkey.Item.insert({'item_id': i} for i in (1, 2))").returncode == 0
    (tmp_path / "a-file").write_text("")
    report = tmp_path / "a-file" / "report.html"
    table = sql.table(prefix + "_badkey", "__square")
    refused = djdask("populate", "badkey", "--workers", "1", "--performance-report", str(report))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())  # as printed, wrapped
    assert "--performance-report" in said and "is not a folder you may write to" in said, said
    assert sql.scalar(f"SELECT COUNT(*) FROM {table}") == 0
    result = djdask.python(
        f"from djdask import Campaign; print(Campaign('badkey', workers=1, performance_report={str(report)!r}).run().errors)"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and result.stdout.strip().endswith("0"), output
    assert f"The performance report {report} could not be written" in output and "Traceback" not in output
    assert sql.scalar(f"SELECT COUNT(*) FROM {table}") == 2


#: The pipeline plot as the browser has it: its tables, tools, size and framed ranges.
DAG_VIEW = """
const fig = Bokeh.documents[0].get_model_by_name("djdask-dag");
const nodes = fig.renderers.find(r => r.data_source && r.data_source.data.table).data_source.data;
return {
  tables: Array.from(nodes.table), x: Array.from(nodes.x), y: Array.from(nodes.y),
  tools: fig.toolbar.tools.map(t => t.type), scroll: fig.toolbar.active_scroll ? fig.toolbar.active_scroll.type : null,
  width: fig.inner_width, height: fig.inner_height,
  x_range: [fig.x_range.start, fig.x_range.end], y_range: [fig.y_range.start, fig.y_range.end],
};
"""


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_campaign_page_draws_a_200_table_pipeline_legibly(djdask, prefix, tmp_path, chromium):
    """A campaign over 200 tables (tests/pipelines/many.py): the page's pipeline plot has
    every table, in layers by depth, framed so that a row gets at least 40 px and a layer
    100 px (names of 11 px legible), with pan and wheel zoom for the rest; a screenshot
    is kept (campaign-page-200.png)."""
    from distributed import Client

    env = djdask.env(DASK_DISTRIBUTED__SCHEDULER__PICKLE="True")
    seeded = djdask.python("import many; many.Session.insert1({'session': 0})", env=env)
    assert seeded.returncode == 0, seeded.stderr
    with remote_cluster(djdask, tmp_path, env) as address:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            run_env = {
                **env,
                "DASK_DJDASK__CLUSTERS__REMOTE__KIND": "address",
                "DASK_DJDASK__CLUSTERS__REMOTE__ADDRESS": address,
            }
            result = djdask("populate", "many", "--cluster", "remote", env=run_env, timeout=600)
            assert result.returncode == 0, result.stdout + result.stderr
            link = re.search(r"Campaign page: +(\S+)", result.stdout).group(1)
            chromium.set_window_size(1400, 1100)
            chromium.get(link)
            deadline = time.monotonic() + 30
            while "(finished)" not in chromium.execute_script(PAGE_TEXT):
                assert time.monotonic() < deadline, chromium.execute_script(PAGE_TEXT)[:2000]
                time.sleep(0.5)
            time.sleep(1.5)  # one more refresh of the plot
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            assert chromium.save_screenshot(str(ARTIFACTS / "campaign-page-200.png"))
            view = chromium.execute_script(DAG_VIEW)
    assert len(view["tables"]) == 200 and len(set(view["tables"])) == 200
    assert {"PanTool", "WheelZoomTool", "ResetTool"} <= set(view["tools"]), view["tools"]
    assert view["scroll"] == "WheelZoomTool"
    x = dict(zip(view["tables"], view["x"]))
    y = dict(zip(view["tables"], view["y"]))
    assert x["Step000"] == 0 and x["Step001"] == 1 and x["Step010"] == 1  # layers by depth
    assert len({(x[t], y[t]) for t in x}) == 200  # no two tables in one place
    (x0, x1), (y0, y1) = view["x_range"], view["y_range"]
    per_layer, per_row = view["width"] / (x1 - x0), view["height"] / (y1 - y0)
    assert per_layer >= 100 and per_row >= 40, (per_layer, per_row, view)
    print(f"200 tables: {per_layer:.0f} px per layer, {per_row:.0f} px per row, plot {view['width']}x{view['height']}")
