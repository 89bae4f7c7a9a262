"""The campaign page's data source (counts, rates, ETA from a sequence of states),
its link, and the page served by a real in-process scheduler."""

from __future__ import annotations

import json
import urllib.request

import pytest

from djdask.db.connect import redact
from djdask.monitor.dashboard import DashboardPlugin, fill_colour
from djdask.monitor.progress import METADATA_KEY, CampaignBoard


def state(
    t: float,
    tables: dict[str, tuple[int, int, int, int]],
    *,
    campaign: str = "c1",
    finished: bool = False,
    seconds: float | None = None,
    errors=(),
) -> dict:
    """A published state at time ``t``: per table (made, errors, in_flight, pending)."""
    return {
        "version": 1,
        "time": t,
        "campaign": {
            "id": campaign,
            "module": "pipeline",
            "host": "h",
            "pid": 1,
            "user": "u",
            "started": 0.0,
            "finished": finished,
            "cancelled": False,
        },
        "tables": [
            {
                "table": name,
                "depth": i,
                "parents": [list(tables)[i - 1]] if i else [],
                "rows": made + 5,
                "made": made,
                "errors": err,
                "in_flight": fl,
                "pending": pend,
                "seconds": t if seconds is None else seconds,
            }
            for i, (name, (made, err, fl, pend)) in enumerate(tables.items())
        ],
        "errors": list(errors),
    }


def by_table(board: CampaignBoard) -> dict[str, dict]:
    return {r["table"]: r for r in board.rows()}


def test_counts_rates_and_eta_from_a_sequence_of_states():
    board = CampaignBoard(window=10.0)
    assert board.rows() == [] and board.edges() == []
    assert board.update(state(0.5, {"A": (0, 0, 4, 96), "B": (0, 0, 0, 0)}))
    # Too young for a span: the average since the table started (nothing yet).
    assert by_table(board)["A"]["rate"] == 0.0 and by_table(board)["A"]["eta"] is None
    # 2 keys/s: 20 keys in 10 s (one of them failed).
    for t in range(1, 12):
        board.update(state(0.5 + t, {"A": (2 * t - (t >= 5), int(t >= 5), 4, 96 - 2 * t), "B": (t, 0, 2, 3)}))
    a, b = by_table(board)["A"], by_table(board)["B"]
    assert (a["done"], a["errors"], a["in_flight"], a["pending"], a["rows"]) == (21, 1, 4, 74, 26)
    assert a["rate"] == pytest.approx(2.0)  # over the last 10 s window, errors included
    assert a["eta"] == pytest.approx((74 + 4) / 2.0)
    assert a["fraction"] == pytest.approx(21 / (22 + 78))
    assert b["rate"] == pytest.approx(1.0) and b["eta"] == pytest.approx(5.0)
    assert board.edges() == [("A", "B")]
    assert board.layout() == {"A": (0.0, 0.0), "B": (1.0, 0.0)}


def test_rate_follows_a_change_of_pace_within_the_window():
    board = CampaignBoard(window=5.0)
    made = 0
    for t in range(21):
        made += 10 if t <= 10 else 1  # 10 keys/s, then 1 key/s
        board.update(state(float(t), {"A": (made, 0, 1, 100)}))
    assert by_table(board)["A"]["rate"] == pytest.approx(1.0)
    assert by_table(board)["A"]["eta"] == pytest.approx(101.0)


def test_stale_state_is_ignored_and_a_new_campaign_starts_afresh():
    board = CampaignBoard(window=10.0)
    board.update(state(10.0, {"A": (0, 0, 0, 10)}))
    board.update(state(20.0, {"A": (100, 0, 0, 10)}))
    assert not board.update(state(15.0, {"A": (50, 0, 0, 10)}))  # older than the one held
    assert not board.update(None) and not board.update({})
    assert by_table(board)["A"]["rate"] == pytest.approx(10.0)
    # Another campaign on the same scheduler: its own counts, no rate from the previous one.
    assert board.update(state(21.0, {"A": (1, 0, 0, 10)}, campaign="c2", seconds=0.0))
    assert by_table(board)["A"]["done"] == 1 and by_table(board)["A"]["rate"] == 0.0


def test_a_finished_campaign_reports_average_rates_and_no_eta():
    board = CampaignBoard(window=10.0)
    board.update(state(1.0, {"A": (1, 0, 1, 8)}))
    board.update(state(9.0, {"A": (39, 1, 0, 0), "B": (0, 0, 0, 0)}, finished=True, seconds=8.0))
    a, b = by_table(board)["A"], by_table(board)["B"]
    assert a["rate"] == pytest.approx(5.0) and a["eta"] is None and a["fraction"] == pytest.approx(39 / 40)
    assert b["fraction"] == 1.0 and b["rate"] == 0.0  # nothing to do: complete


def test_fill_colour_goes_from_grey_to_green():
    assert fill_colour(0.0) == "#e6e6e6" and fill_colour(1.0) == "#4caf50" and fill_colour(2.0) == "#4caf50"


def test_redact_masks_each_known_secret():
    text = "mysql://ana:s3cr3t-pw@db/lab and key AKIA/wJalrXUt"
    assert redact(text, ["s3cr3t-pw", "AKIA/wJalrXUt"]) == "mysql://ana:********@db/lab and key ********"


def test_the_page_and_its_json_are_served_by_a_real_scheduler():
    """The plugin on an in-process scheduler: /djdask/state.json has the published
    state's rows, /djdask is a Bokeh page in the dashboard's frame, with a link in
    the navigation bar."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(DashboardPlugin(), name=DashboardPlugin.name)
        client.register_plugin(DashboardPlugin(), name=DashboardPlugin.name)  # idempotent: one page
        base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
        empty = json.load(urllib.request.urlopen(f"{base}/djdask/state.json"))
        assert empty["campaign"] is None and empty["tables"] == []
        client.set_metadata(
            METADATA_KEY,
            state(
                100.0,
                {"ScanMovie": (3, 1, 2, 4), "Traces": (0, 0, 0, 0)},
                errors=[{"table": "ScanMovie", "key": "scan_id=2", "message": "ValueError: bad", "traceback": "tb"}],
            ),
        )
        served = json.load(urllib.request.urlopen(f"{base}/djdask/state.json"))
        assert [(r["table"], r["done"], r["errors"], r["in_flight"], r["pending"]) for r in served["tables"]] == [
            ("ScanMovie", 3, 1, 2, 4),
            ("Traces", 0, 0, 0, 0),
        ]
        assert served["errors"][0]["key"] == "scan_id=2"
        page = urllib.request.urlopen(f"{base}/djdask").read().decode()
        assert "Bokeh" in page and 'href="djdask"' in page
        status = urllib.request.urlopen(f"{base}/status").read().decode()
        assert 'href="djdask"' in status  # Dask's own pages link to it


def test_log_records_are_redacted_in_every_logger(tmp_path):
    """After redact_logs(), no log line shows a known secret (message, arguments or
    traceback), and a malformed logging call is still reported by logging itself."""
    import subprocess
    import sys

    code = (
        "import logging, os\n"
        "os.environ['DJ_PASS'] = 'hunter-22-pw'\n"
        "os.environ['AWS_SECRET_ACCESS_KEY'] = 'wJalr/XUtn+FEMI'\n"
        "from djdask.db.connect import redact_logs\n"
        "redact_logs()\n"
        "logging.basicConfig()\n"
        "logging.getLogger('datajoint').error('make failed: mysql://u:%s@h', 'hunter-22-pw')\n"
        "logging.getLogger('x').warning('bad %d', 'not a number')\n"
        "try:\n"
        "    raise ValueError('s3 secret wJalr/XUtn+FEMI refused')\n"
        "except ValueError:\n"
        "    logging.getLogger('distributed.worker').exception('task failed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "mysql://u:********@h" in out.stderr and "ValueError: s3 secret ******** refused" in out.stderr
    assert "--- Logging error ---" in out.stderr  # logging's own report of the malformed call
    assert "hunter-22-pw" not in out.stderr and "wJalr/XUtn+FEMI" not in out.stderr


def test_a_huge_tables_estimated_rows_are_marked_as_an_estimate():
    """A table not counted at the start (the server's estimate) shows ~ before its rows."""
    board = CampaignBoard(window=10.0)
    snapshot = state(1.0, {"Big": (10, 0, 2, 5), "Small": (1, 0, 0, 0)})
    snapshot["tables"][0].update(rows=12_000_010, rows_estimated=True)
    board.update(snapshot)
    assert by_table(board)["Big"]["rows"] == "~12,000,010"
    assert by_table(board)["Small"]["rows"] == 6


def test_each_layer_is_ordered_by_its_parents_so_edges_cross_less():
    """Children listed against their parents' order still sit level with their parents."""
    board = CampaignBoard(window=10.0)
    tables = [("A", 0, []), ("B", 0, []), ("D", 1, ["B"]), ("C", 1, ["A"]), ("E", 2, ["D", "C"]), ("F", 2, ["D"])]
    board.update(
        {
            "version": 1,
            "time": 1.0,
            "campaign": {},
            "tables": [
                {"table": n, "depth": d, "parents": p, "rows": 0, "made": 0, "errors": 0, "in_flight": 0,
                 "pending": 1, "seconds": 0.0}
                for n, d, p in tables
            ],
            "errors": [],
        }
    )  # fmt: skip
    pos = board.layout()
    assert pos["C"] == (1.0, 0.0) and pos["D"] == (1.0, -1.0)  # level with A and B
    assert pos["E"] == (2.0, 0.0) and pos["F"] == (2.0, -1.0)  # E between C and D, F under D
