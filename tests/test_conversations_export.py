"""`chatkit-gateway conversations` (SPEC §10) as a site owner runs it: a real process reading
the store of a real `serve` process — SQLite and a real PostgreSQL — while that gateway goes
on writing; JSON Lines and CSV, `--since`, `--output`, `--summary`; and never a device id,
an address, a header value or attachment bytes in what it prints."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from gateway.agent.store_schema import open_engine, threads
from tests.conftest import ALLOWED, TEST_KEY
from tests.support.agent_client import DEVICE_A, DEVICE_B, PATH, agent_route, create, thread_id_of
from tests.support.fake_responses import FakeResponses, Script
from tests.support.postgres_server import PostgresServer, running_postgres
from tests.support.processes import (
    ROOT,
    SCRIPT,
    Gateway,
    base_env,
    free_port,
    start_gateway,
    write_policy,
)
from tests.test_readme import readme_command

ENV = base_env(OPENAI_API_KEY=TEST_KEY)
SECRET_HEADER = "X-Team-Secret-Value-7c1d"  # a header a proxy might add: never exported
_README = (
    ".venv/bin/chatkit-gateway conversations --config gateway.yaml --route assistant --since 7d"
)
README_JSONL, README_SUMMARY = _README, f"{_README} --summary"
README_CSV = f"{_README} --format csv --output /tmp/last-week.csv"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'threads.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, base_url: str, store_url: str) -> AsyncIterator[Path]:
    port = free_port()
    config = write_policy(
        tmp_path / "gateway.yaml", port=port, base_url=base_url, routes=[agent_route(store_url)]
    )
    gateways: list[Gateway] = []
    try:
        await start_gateway(config, port, env=ENV, gateways=gateways)
        yield config
    finally:
        for gateway in gateways:
            await gateway.kill()


async def turn(
    http: aiohttp.ClientSession, config: Path, body: dict[str, Any], device: str
) -> list[dict[str, Any]]:
    port = _port(config)
    headers = {"Origin": ALLOWED, "Content-Type": "application/json", "X-Device-Id": device,
               "X-Team-Secret": SECRET_HEADER}  # fmt: skip
    async with http.post(f"http://127.0.0.1:{port}{PATH}", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def export(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "conversations", "--config", str(config), "--route", "assistant", *args,
        env=ENV, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def answer_of(events: list[dict[str, Any]]) -> str:
    (done,) = [
        e["item"]["id"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    return str(done)


def assert_nothing_private(text: str) -> None:
    for private in (DEVICE_A, DEVICE_B, SECRET_HEADER, "127.0.0.1", ALLOWED, "\\x89PNG"):
        assert private not in text


async def test_conversations_export_while_serve_writes(
    model: FakeResponses, store_url: str, tmp_path: Path
) -> None:
    model.script(
        Script(text="We open at nine.", file_search=True),  # cites handbook.md
        Script(text="No idea, sorry.", file_search=False),  # cites nothing: a coverage gap
    )
    model.script_title(Script(text="Opening hours"), Script(text="Parking"))
    async with (
        serving(tmp_path, model.base_url, store_url) as config,
        aiohttp.ClientSession() as http,
    ):
        first = await turn(http, config, create("When do you open?"), DEVICE_A)
        second = await turn(http, config, create("Where do I park?"), DEVICE_B)
        a_thread, b_thread = thread_id_of(first), thread_id_of(second)
        rate = {"thread_id": b_thread, "item_ids": [answer_of(second)], "kind": "negative"}
        async with http.post(
            f"http://127.0.0.1:{_port(config)}{PATH}",
            json={"type": "items.feedback", "params": rate},
            headers={"Origin": ALLOWED, "X-Device-Id": DEVICE_B},
        ) as resp:
            assert resp.status == 200

        code, out, err = await export(config)
        assert code == 0, err
        assert err.strip() == "conversations assistant: 2 threads"
        records = [json.loads(line) for line in out.splitlines()]
        by_id = {r["id"]: r for r in records}
        assert list(by_id) == [a_thread, b_thread]  # oldest first
        a, b = by_id[a_thread], by_id[b_thread]
        assert (a["title"], b["title"]) == ("Opening hours", "Parking")
        assert a["user"] != b["user"] and len(a["user"]) >= 16  # the keyed hashes
        assert [(m["role"], m["text"]) for m in a["items"]] == [
            ("user", "When do you open?"), ("assistant", "We open at nine."),
        ]  # fmt: skip
        assert [s.get("filename") for s in a["items"][1]["sources"]] == ["handbook.md"]
        assert b["items"][1]["sources"] == []
        assert [m["feedback"] for m in b["items"]] == [None, "negative"]
        for record in records:
            for field in ("created_at", "updated_at"):
                assert dt.datetime.fromisoformat(record[field]).tzinfo is not None
        assert all(m["created_at"].endswith("Z") for r in records for m in r["items"])
        assert_nothing_private(out + err)

        # --summary: the day's counts, and the gap (one answer that cited nothing).
        code, out, err = await export(config, "--summary")
        assert code == 0, err
        header, *days, total = out.splitlines()
        assert header.split() == ["day", "threads", "messages", "negative", "uncited"]
        assert total.split() == ["total", "2", "2", "1", "1"]
        assert len(days) == 1 and days[0].split()[1:] == ["2", "2", "1", "1"]

        # CSV to a file; --since leaves out a thread untouched for 10 days.
        await _age(store_url, a_thread, days=10)
        target = tmp_path / "out" / "week.csv"
        target.parent.mkdir()
        code, out, err = await export(
            config, "--format", "csv", "--since", "7d", "--output", str(target)
        )
        assert (code, out) == (0, "")
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
        assert [r["id"] for r in rows] == [b_thread]
        (row,) = rows
        assert (row["title"], row["messages"], row["answers"], row["negative"]) == (
            "Parking",
            "1",
            "1",
            "1",
        )
        assert [m["text"] for m in json.loads(row["items"])] == [
            "Where do I park?",
            "No idea, sorry.",
        ]
        assert_nothing_private(target.read_text())

        # While the gateway writes: every export is whole, and sees what was committed.
        model.default = Script(text="Busy answer.", file_search=False)

        async def writer() -> int:
            done = 0
            for n in range(12):
                await turn(http, config, create(f"Question {n}"), DEVICE_A)
                done += 1
            return done

        writing = asyncio.create_task(writer())
        seen = []
        while not writing.done():
            code, out, err = await export(config)
            assert code == 0, err
            seen.append(len([json.loads(line) for line in out.splitlines()]))
        assert await writing == 12
        code, out, _ = await export(config)
        assert len(out.splitlines()) == 14
        assert seen == sorted(seen) and all(2 <= n <= 14 for n in seen)


def _port(config: Path) -> int:
    import yaml

    return int(yaml.safe_load(config.read_text())["server"]["port"])


async def _age(store_url: str, thread_id: str, *, days: int) -> None:
    engine = open_engine(store_url, timeout=5, pool_size=1)
    try:
        async with engine.begin() as conn:
            old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days)
            await conn.execute(
                sa.update(threads).where(threads.c.id == thread_id).values(updated_at=old)
            )
    finally:
        await engine.dispose()


async def test_conversations_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    config = write_policy(
        tmp_path / "gateway.yaml", port=free_port(),
        routes=[agent_route(f"sqlite:///{tmp_path / 'none.db'}")],
    )  # fmt: skip
    code, out, err = await export(config)
    assert (code, out) == (1, "")
    assert "does not exist" in err
    assert not (tmp_path / "none.db").exists()  # an export never creates a store
    code, _, err = await export(config, "--since", "soon")
    assert code == 2 and "--since" in err
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "conversations", "--config", str(config), "--route", "nope",
        env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_bytes = await proc.communicate()
    assert proc.returncode == 2 and "no chatkit_agent route named 'nope'" in err_bytes.decode()


async def test_readme_conversations_commands_on_make_runs_policy(tmp_path: Path) -> None:
    """The README's three `conversations` commands, on gateway.yaml as `make run` serves it
    (stub model, free ports, a temporary store; the CSV written below tmp_path)."""
    port, demo = free_port(), free_port()
    store = f"sqlite:///{tmp_path / 'threads.db'}"
    env = base_env(GATEWAY_PORT=str(port), DEMO_PORT=str(demo), CHATKIT_STORE_URL=store)
    origin, device = f"http://localhost:{demo}", "readme-device-0123456789"
    gateways: list[Gateway] = []
    try:
        await start_gateway(
            ROOT / "gateway.yaml", port, "--stub-upstream", env=env, gateways=gateways
        )
        url = f"http://127.0.0.1:{port}{PATH}"
        headers = {"Origin": origin, "X-Device-Id": device}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                url, json=create("How do I rotate the key?"), headers=headers
            ) as resp:
                assert resp.status == 200
                text = await resp.text()
            events = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("data: ")]
            rate = {
                "thread_id": thread_id_of(events),
                "item_ids": [answer_of(events)],
                "kind": "negative",
            }
            async with http.post(
                url, json={"type": "items.feedback", "params": rate}, headers=headers
            ) as resp:
                assert resp.status == 200
        outputs = {}
        for key in (README_JSONL, README_CSV, README_SUMMARY):
            command = readme_command(key).text.replace(
                "/tmp/last-week.csv", str(tmp_path / "week.csv")
            )
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", command, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            outputs[key] = out.decode()
    finally:
        for gateway in gateways:
            await gateway.kill()
    (record,) = [json.loads(line) for line in outputs[README_JSONL].splitlines()]
    assert record["title"] == "How do I rotate the key"  # the stub's title
    assert [m["role"] for m in record["items"]] == ["user", "assistant"]
    assert record["items"][1]["feedback"] == "negative"
    assert device not in outputs[README_JSONL]
    (row,) = csv.DictReader(io.StringIO((tmp_path / "week.csv").read_text(), newline=""))
    assert (row["id"], row["negative"]) == (record["id"], "1")
    total = outputs[README_SUMMARY].splitlines()[-1].split()
    assert total[:4] == ["total", "1", "1", "1"]
