"""A following campaign seen from outside (issue 31, item 5): the scheduler's ``/metrics``
carries djdask's series beside Dask's, with the counts of the keys made, and
``/djdask/health`` answers 200 with ``following`` true, headless (Dask's dashboard off, the
tests' default), as a Prometheus server and a liveness probe would read them."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.batch_campaigns import Said
from tests.integration.test_follow import INTERVAL, follow_env, rows, until
from tests.integration.test_jobs_engine import seed_ledger

pytestmark = pytest.mark.integration


def metrics(base: str) -> dict[tuple[str, str | None], float]:
    """djdask's samples on ``base``/metrics, by (name, table label), read with prometheus_client's
    own parser (so the text is valid exposition format); Dask's must be there too."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    assert "dask_scheduler_workers" in text, text[:2000]
    return {
        (s.name, s.labels.get("table")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("djdask_") and "le" not in s.labels
    }


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_a_following_campaign_serves_metrics_and_health(server, djdask, sql, prefix, tmp_path):
    """Two keys at the start, three more inserted while the campaign follows: /metrics counts 5
    Entry keys made, each timed in djdask_make_seconds, none failed, pending or in flight, its
    one worker, 3 keys found by its looks and a last look within the interval, and no
    credential; the health endpoint says 200, following, database reachable, and how long ago
    the last look was.  SIGTERM ends it with exit 0.  Wrong if this fails: a monitoring system
    would see a stuck or empty campaign where one works, or the page's endpoints would miss a
    headless campaign."""
    seed_ledger(djdask, 2)
    source = sql.table(prefix + "_ledger", "source")
    run = Said(djdask, follow_env(djdask, tmp_path), "populate", "ledger", "--follow", "--workers", "1")
    try:
        until(lambda: re.search(r"Campaign page: +(\S+)", run.stdout + run.stderr), 120, "the campaign page's link")
        page = re.search(r"Campaign page: +(\S+)", run.stdout + run.stderr).group(1)
        base = page.rsplit("/djdask", 1)[0]
        until(lambda: rows(sql, prefix) == 2, 120, "the first keys")
        time.sleep(INTERVAL)  # idle a while: these keys are found by a look
        sql.query(f"INSERT INTO {source} (source_id) VALUES (2), (3), (4)")
        until(lambda: rows(sql, prefix) == 5, INTERVAL + 30, "the keys inserted while following")

        def counted() -> bool:
            m = metrics(base)
            return (
                m.get(("djdask_keys_made_total", "Entry")) == 5 and m.get(("djdask_follow_keys_found_total", None)) == 3
            )

        until(counted, 15, "/metrics counting the 5 keys made and the 3 found")
        m = metrics(base)
        assert m[("djdask_keys_failed_total", "Entry")] == 0, m
        assert m[("djdask_keys_pending", "Entry")] == 0 and m[("djdask_keys_in_flight", "Entry")] == 0, m
        assert m[("djdask_make_seconds_count", "Entry")] == 5, m
        assert m[("djdask_make_seconds_sum", "Entry")] >= 5 * 0.2 * 0.95, m  # each make() sleeps 0.2 s
        assert m[("djdask_following", None)] == 1 and m[("djdask_database_reachable", None)] == 1, m
        assert m[("djdask_workers", None)] == 1, m
        assert time.time() - m[("djdask_follow_last_look_timestamp_seconds", None)] < INTERVAL + 5, m

        answer = urllib.request.urlopen(f"{base}/djdask/health", timeout=10)
        health = json.load(answer)
        assert answer.status == 200 and health["healthy"], health
        assert health["following"] is True and health["database_reachable"] is True, health
        assert health["last_look_seconds_ago"] < INTERVAL + 5 and health["last_look"].endswith("+00:00"), health
        state = json.load(urllib.request.urlopen(f"{page}/state.json", timeout=10))  # what the page's line reads
        assert state["following"]["enqueued"] == 3, state["following"]
        text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        assert run.proc.poll() is None, run.stderr
    finally:
        result = run.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    password = server.env.get("DJ_PASS")  # the embedded PostgreSQL's is empty: nothing to look for
    assert not password or password not in text, "a credential in the metrics"
