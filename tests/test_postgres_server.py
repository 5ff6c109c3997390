"""The private PostgreSQL fixture, checked with asyncpg: password auth, stop and start."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.support.postgres_server import (
    PostgresServer,
    postgres_bindir,
    postgres_server,
    running_postgres,
)

__all__ = ["postgres_server"]  # the fixture, imported for use here

pytestmark = pytest.mark.slow


async def test_connects_with_the_url_and_queries(postgres_server: PostgresServer) -> None:
    pg = postgres_server
    assert pg.url == f"postgresql://gateway:{pg.password}@127.0.0.1:{pg.port}/gateway"
    assert len(pg.password) >= 16
    conn = await asyncpg.connect(pg.url)
    try:
        row = await conn.fetchrow(
            "SELECT current_user AS who, current_database() AS db, 40 + 2 AS answer,"
            " current_setting('fsync') AS fsync, rolsuper FROM pg_roles"
            " WHERE rolname = current_user"
        )
        assert row is not None
        assert (row["who"], row["db"], row["answer"]) == ("gateway", "gateway", 42)
        assert row["fsync"] == "off"
        assert row["rolsuper"] is False  # the gateway gets an ordinary role, as in production
        await conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)")
    finally:
        await conn.close()


async def test_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres_server.url_for("gateway", password="not-the-password"))
    # The superuser has no usable password over TCP, only the private socket.
    url = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        await asyncpg.connect(url, password="")


async def test_stop_refuses_then_start_recovers_with_data(
    postgres_server: PostgresServer,
) -> None:
    pg = postgres_server
    port = pg.port
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO kept VALUES (1, 'survives a restart')")
    finally:
        await conn.close()

    pg.stop()
    assert not pg.running
    with pytest.raises(OSError):
        await asyncpg.connect(pg.url, timeout=2)

    pg.start()
    assert pg.running and pg.port == port
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == "survives a restart"
    finally:
        await conn.close()


async def test_stop_drops_open_connections(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.url)
    postgres_server.restart()
    with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, asyncpg.InterfaceError)):
        await conn.fetchval("SELECT 1")
    await conn.close()
    again = await asyncpg.connect(postgres_server.url)
    assert await again.fetchval("SELECT 1") == 1
    await again.close()


async def test_new_database_and_terminate_connections(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database("isolated_one")
    assert url.endswith("/isolated_one")
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
        await conn.execute("CREATE TABLE mine (id int)")  # the gateway user owns it
    finally:
        await conn.close()
    held = await asyncpg.connect(postgres_server.url)
    assert postgres_server.terminate_connections() == 1
    with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, asyncpg.InterfaceError)):
        await held.fetchval("SELECT 1")
    await held.close()
    with pytest.raises(ValueError):
        postgres_server.new_database("bad; DROP")


def test_runs_unprivileged_and_cleans_up() -> None:
    with running_postgres() as pg:
        workdir, proc = pg.workdir, pg.proc
        assert proc is not None
        owner = pg.datadir.stat().st_uid
        if os.geteuid() == 0:
            assert owner != 0  # PostgreSQL refuses root; the server runs as its own user
        assert (pg.socket_dir / f".s.PGSQL.{pg.port}").exists()
        assert str(pg.bindir).startswith("/usr/lib/postgresql/")
    assert proc.poll() is not None  # the process is gone
    assert not workdir.exists()  # and so is its directory


def test_start_failure_shows_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_postgres() as pg:
        pg.stop()
        monkeypatch.setattr("tests.support.postgres_server.START_TIMEOUT", 5.0)
        (pg.datadir / "postgresql.auto.conf").write_text("shared_buffers = 'nonsense'\n")
        with pytest.raises(RuntimeError, match="its log:") as info:
            pg.start()
        assert "shared_buffers" in str(info.value)
        assert not pg.running


def test_missing_binaries_fail_under_ci_and_skip_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in ("9", "16"):  # "16" has no server binary: an incomplete install
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    (tmp_path / "9" / "bin" / "postgres").touch()
    assert postgres_bindir(tmp_path) == tmp_path / "9" / "bin"
    empty = tmp_path / "none"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"scripts/system-deps\.sh"):
        postgres_bindir(empty)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        postgres_bindir(empty)


def test_bindir_is_the_newest_version() -> None:
    bindir = postgres_bindir()
    assert (bindir / "initdb").exists() and (bindir / "pg_isready").exists()
    versions = [int(p.name) for p in bindir.parent.parent.iterdir() if p.name.isdigit()]
    assert int(bindir.parent.name) == max(versions)
