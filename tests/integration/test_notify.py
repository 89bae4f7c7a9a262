"""Notifications of a campaign's end, received by real servers the test starts: an HTTP
server for the webhooks and an SMTP server (aiosmtpd).  Each receiver gets exactly one
message per campaign end, with the campaign id and per-table counts; the webhook's token
and the SMTP password appear in no output."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.test_jobs_engine import seed_ledger

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["postgres"], indirect=True)]


class Hooks:
    """An HTTP server that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                hooks.bodies.append({"path": self.path, **json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def hooks():
    server = Hooks()
    yield server
    server.close()


@pytest.fixture
def mailbox():
    """An SMTP server on a free port; its ``messages`` are the mails it received."""
    import socket

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Keep(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


def test_one_notification_per_campaign_end_with_its_figures(djdask, sql, prefix, hooks, mailbox, tmp_path):
    n = 12
    seed_ledger(djdask, n)
    token = "T0KEN-abcdef-secret"
    notify = {
        "webhooks": [f"{hooks.url}/hook?token={token}", "http://127.0.0.1:9/unreachable"],
        "email": {"host": "127.0.0.1", "port": mailbox.port, "from": "djdask@lab.org", "to": ["me@lab.org"]},
    }
    env = djdask.env(DASK_DJDASK__CAMPAIGN__NOTIFY=json.dumps(notify), DJDASK_TEST_LEDGER=str(tmp_path / "l.txt"))
    result = djdask("populate", "ledger", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(hooks.bodies) == 1, hooks.bodies
    body = hooks.bodies[0]
    campaign = body["campaign"]
    assert (
        f"Campaign:       {campaign['id']} " in result.stdout
        and campaign["state"] == "finished"
        and campaign["exit_code"] == 0
    )
    assert campaign["module"] == "ledger"
    assert campaign["tables"] == [
        {"table": "Entry", "made": n, "errors": 0, "retries": 0, "seconds": campaign["tables"][0]["seconds"]}
    ]
    assert campaign["id"] in body["text"] and f"{n} key(s) made" in body["text"]
    # The unreachable second webhook costs a warning naming it by position, not its URL.
    assert "Notification to webhook 2 of djdask.campaign.notify failed" in result.stderr
    assert token not in result.stdout + result.stderr and "127.0.0.1:9/" not in result.stderr
    assert len(mailbox.messages) == 1
    mail = mailbox.messages[0]
    assert campaign["id"] in mail["Subject"] and mail["To"] == "me@lab.org"
    text = mail.get_payload().replace("\r\n", "\n")
    assert json.loads(text.split("\n\n", 1)[1])["tables"][0]["made"] == n

    # The next campaign (nothing left to make) is one more message, no more.
    again = djdask("populate", "ledger", "--workers", "1", env=env)
    assert again.returncode == 0  # nothing left to make
    assert len(hooks.bodies) == 2 and hooks.bodies[1]["campaign"]["tables"][0]["made"] == 0


def test_a_table_past_its_error_threshold_is_told_once_while_the_campaign_runs(djdask, sql, prefix, hooks):
    """Of 9 things, 6 fail; with error-threshold 2 the webhook hears once that Outcome passed it
    (before the end message), then the end: failed keys counted, exit code 1."""
    assert djdask.python("import failing; failing.Thing.insert({'thing_id': i} for i in range(9))").returncode == 0
    notify = {"error-threshold": 2, "webhooks": [f"{hooks.url}/hook"]}
    env = djdask.env(DASK_DJDASK__CAMPAIGN__NOTIFY=json.dumps(notify))
    result = djdask("populate", "failing", "--workers", "1", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(hooks.bodies) == 2, hooks.bodies
    running, ended = (b["campaign"] for b in hooks.bodies)
    assert running["state"] == "running" and running["table"] == "Outcome" and running["errors"] >= 2
    assert "past the threshold of 2" in hooks.bodies[0]["text"]
    assert ended["state"] == "finished" and ended["exit_code"] == 1 and ended["id"] == running["id"]
    assert ended["tables"][0]["errors"] == 6 and ended["tables"][0]["made"] == 3
