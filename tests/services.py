"""Real database servers for the tests and benchmarks, started from nothing.

Each starter returns a :class:`Server` whose ``env`` holds the ``DJ_*``
variables that point DataJoint at it, and whose ``stop()`` stops what it
started.  Nothing here touches a server the machine already runs: PostgreSQL
is djdask's own embedded server in a fresh directory, MariaDB a private
instance with its own data directory, socket and port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["Server", "ServiceUnavailable", "SqlClient", "start_mariadb", "start_postgres"]


class ServiceUnavailable(RuntimeError):
    """A server could not be started on this machine."""


@dataclass
class Server:
    backend: str  # "postgresql" or "mysql"
    env: dict[str, str]
    stop: Callable[[], None] = field(repr=False)
    label: str = ""

    def client(self) -> "SqlClient":
        return SqlClient(self.env)

    def instance(self):
        """A DataJoint Instance (own config and connection) on this server."""
        from orchestrator.database import import_datajoint

        dj = import_datajoint()
        env = self.env
        extra = {"database__name": env["DJ_DATABASE_NAME"]} if env["DJ_BACKEND"] == "postgresql" else {}
        return dj.Instance(env["DJ_HOST"], env["DJ_USER"], env["DJ_PASS"], int(env["DJ_PORT"]),
                           use_tls=False, backend=env["DJ_BACKEND"], **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(base: Path) -> Server:
    """djdask's embedded PostgreSQL in ``base`` (the same code path as `djdask demo`)."""
    from orchestrator.database import EmbeddedPostgres

    server = EmbeddedPostgres(base)
    try:
        server.start()
    except Exception as err:
        raise ServiceUnavailable(f"embedded PostgreSQL did not start in {base}: {err}") from err
    return Server("postgresql", server.settings(), server.stop, label="postgres")


def start_mariadb(base: Path) -> Server:
    """A private MariaDB instance under ``base``: own datadir, socket and TCP port."""
    install_db = shutil.which("mariadb-install-db")
    mariadbd = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
    admin = shutil.which("mariadb-admin")
    client = shutil.which("mariadb")
    if not (install_db and mariadbd and admin and client):
        raise ServiceUnavailable("MariaDB is not installed (apt-get install mariadb-server)")
    base.mkdir(parents=True, exist_ok=True)
    datadir, sock, pidfile = base / "data", base / "mysqld.sock", base / "mysqld.pid"
    port = _free_port()
    subprocess.run(
        [install_db, "--no-defaults", f"--datadir={datadir}", "--user=root",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        check=True, capture_output=True,
    )
    log = open(base / "mysqld.log", "w")
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--pid-file={pidfile}", "--user=root", "--skip-name-resolve",
         "--skip-log-bin", "--innodb-buffer-pool-size=256M", "--max-connections=500"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    deadline = time.monotonic() + 60
    while subprocess.run([admin, f"--socket={sock}", "-uroot", "ping"], capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            raise ServiceUnavailable(f"mariadbd did not start; see {base / 'mysqld.log'}")
        time.sleep(0.2)
    password = secrets.token_urlsafe(12)
    sql = (
        f"CREATE USER 'djdask'@'127.0.0.1' IDENTIFIED BY '{password}';"
        "GRANT ALL PRIVILEGES ON *.* TO 'djdask'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;"
    )
    subprocess.run([client, f"--socket={sock}", "-uroot", "-e", sql], check=True, capture_output=True)
    env = {
        "DJ_BACKEND": "mysql",
        "DJ_HOST": "127.0.0.1",
        "DJ_PORT": str(port),
        "DJ_USER": "djdask",
        "DJ_PASS": password,
        "DJ_USE_TLS": "false",
    }
    return Server("mysql", env, stop, label="mariadb")


class SqlClient:
    """Plain SQL against a test server, independent of DataJoint, for checking results."""

    def __init__(self, env: dict[str, str]) -> None:
        self.backend = env["DJ_BACKEND"]
        if self.backend == "postgresql":
            import psycopg2

            self.conn = psycopg2.connect(
                host=env["DJ_HOST"], port=int(env["DJ_PORT"]), user=env["DJ_USER"],
                dbname=env.get("DJ_DATABASE_NAME", "postgres"),
            )
            self.conn.autocommit = True
        else:
            import pymysql

            self.conn = pymysql.connect(
                host=env["DJ_HOST"], port=int(env["DJ_PORT"]), user=env["DJ_USER"],
                password=env["DJ_PASS"], autocommit=True,
            )

    def table(self, schema: str, table: str) -> str:
        q = '"' if self.backend == "postgresql" else "`"
        return f"{q}{schema}{q}.{q}{table}{q}"

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall()) if cur.description else []

    def scalar(self, sql: str, args: tuple = ()):
        return self.query(sql, args)[0][0]

    def tables(self, schema: str) -> set[str]:
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {r[0] for r in rows}

    def jobs_counts(self, schema: str, table: str) -> dict[str, int]:
        """Rows by status in the jobs table of ``table`` (``{}`` when it does not exist)."""
        name = "~~" + table.lstrip("_")
        if name not in self.tables(schema):
            return {}
        return dict(self.query(f"SELECT status, COUNT(*) FROM {self.table(schema, name)} GROUP BY status"))

    def close(self) -> None:
        self.conn.close()
