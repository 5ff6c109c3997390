"""A private PostgreSQL server for tests: own data dir, free port, password auth.

Debian's binaries (``/usr/lib/postgresql/<version>/bin``, the newest version; not on PATH)
are used; missing ones fail the test under CI (``scripts/system-deps.sh`` installs them) and
skip it elsewhere. PostgreSQL refuses to run as root, so under root the server runs as the
unprivileged ``postgres`` user (created by the Debian package; ``nobody`` as a fallback) and
owns its temporary directory.

    with running_postgres() as pg:
        pg.url  # postgresql://gateway:<password>@127.0.0.1:<port>/gateway
        pg.stop(); pg.start()  # same port, same data

Other modules use the module-scoped fixture by importing it:
``from tests.support.postgres_server import postgres_server  # noqa: F401``, or call
``running_postgres()`` themselves; ``new_database()`` gives a test its own empty database.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

USER = "gateway"
DATABASE = "gateway"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bindir(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The newest ``<root>/<version>/bin`` that has initdb and postgres."""
    found = [
        path.parent
        for path in root.glob("*/bin/initdb")
        if (path.parent / "postgres").exists() and path.parent.parent.name.isdigit()
    ]
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is missing under CI (scripts/system-deps.sh installs it)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    return max(found, key=lambda bindir: int(bindir.parent.name))


def _run_as() -> pwd.struct_passwd | None:
    """The account to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """One postgres process over a fresh cluster; ``stop``/``start`` keep the port and data."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.socket_dir = workdir / "sock"
        self.log_path = workdir / "postgres.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = USER
        self.password = secrets.token_hex(12)
        self.database = DATABASE
        self.proc: subprocess.Popen[bytes] | None = None
        self._account = _run_as()
        self._initdb()

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str, *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # process plumbing

    def _as_account(self) -> dict[str, Any]:
        """Popen arguments that drop root privileges to the server's account."""
        env = {
            "PATH": f"{self.bindir}:/usr/bin:/bin",
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PGTZ": "UTC",
        }
        kw: dict[str, Any] = {"cwd": self.workdir, "env": env}
        if self._account is not None:
            kw.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        return kw

    def _initdb(self) -> None:
        if self._account is not None:
            os.chown(self.workdir, self._account.pw_uid, self._account.pw_gid)
        self.workdir.chmod(0o700)
        self.socket_dir.mkdir(mode=0o700)
        pwfile = self.workdir / "superuser.pw"
        pwfile.write_text(secrets.token_hex(16) + "\n")
        for path in (self.socket_dir, pwfile):
            if self._account is not None:
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        argv = [
            str(self.bindir / "initdb"),
            "--pgdata", str(self.datadir),
            "--username", "postgres",
            "--pwfile", str(pwfile),
            "--auth-local", "trust",  # the superuser, over the private socket only
            "--auth-host", "scram-sha-256",
            "--encoding", "UTF8",
            "--locale", "C.UTF-8",
            "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, check=False, **self._as_account())
        pwfile.unlink()
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{output}")
        self.start()
        try:
            self.admin(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.password}'")
            self.admin(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        """Start (again) on the same port and data; waits until it accepts connections."""
        if self.running:
            return
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "50",
            "password_encryption": "scram-sha-256",
            "log_min_messages": "warning",
            "log_connections": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, **self._as_account()
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"postgres did not accept connections on port {self.port} within "
            f"{START_TIMEOUT:g}s; its log:\n{self.log()}"
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect clients); SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    # SQL as the superuser, over the private unix socket

    def admin(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL with psql as the superuser; returns its unaligned, tuples-only output."""
        argv = [
            str(self.bindir / "psql"),
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port),
            "-U", "postgres", "-d", database, "-c", sql,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, check=False, **self._as_account())
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.decode(errors='replace').strip()}")
        return str(done.stdout.decode()).strip()

    def new_database(self, name: str | None = None) -> str:
        """A fresh empty database owned by the gateway user; returns its URL."""
        name = name or f"test_{secrets.token_hex(6)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.admin(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url_for(name)

    def terminate_connections(self, database: str | None = None) -> int:
        """Kill the gateway user's server connections (like a failover); returns how many."""
        db = database or self.database
        out = self.admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE usename = '{USER}' AND datname = '{db}'"
        )
        return int(out or 0)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A private server for the duration of the block; process and directory always removed."""
    bindir = postgres_bindir()
    workdir = Path(tempfile.mkdtemp(prefix="ckgw-pg-"))
    server: PostgresServer | None = None
    try:
        server = PostgresServer(bindir, workdir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One server per test module; a test that stops it should start it again."""
    with running_postgres() as server:
        yield server
