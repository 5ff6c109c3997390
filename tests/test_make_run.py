"""The README's first command, `make run`, run the way a new user runs it.

A real `make run` in this checkout, as its own process group, without OPENAI_API_KEY, on
ports of its own (the environment variables the README names), then Ctrl-C: it must
answer a token from the demo origin, serve the demo pages, stream a ChatKit answer from
the demo backend through the proxy route, answer a question about this project on the
agent route with a link to its docs (knowledge), and stop every process it started, with
no error from make.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import ROOT, base_env, free_port
from tests.test_proxy import create_req, sse_events

pytestmark = pytest.mark.slow

START_SECONDS = 60  # a cold start imports the ChatKit SDK in the demo backend
STOP_SECONDS = 10


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_banner(proc: asyncio.subprocess.Process, log: Path) -> str:
    """What the user waits for: the banner, printed once every part answers."""
    deadline = time.monotonic() + START_SECONDS
    while "Ctrl-C stops them all" not in (text := log.read_text()):
        assert proc.returncode is None, f"make run exited before it was ready:\n{text}"
        assert time.monotonic() < deadline, f"make run never became ready:\n{text}"
        await asyncio.sleep(0.2)
    return text


async def knowledge_pages(http: aiohttp.ClientSession, gw: int) -> float:
    """The agent route's indexed pages, once its first ingest has committed."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        async with http.get(f"http://127.0.0.1:{gw}/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == 'chatkit_gateway_knowledge_pages{route="assistant"}' and float(value):
                return float(value)
        assert time.monotonic() < deadline, "the demo's knowledge was never ingested"
        await asyncio.sleep(0.2)


async def test_make_run_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    gw, demo, backend = free_port(), free_port(), free_port()
    env = base_env(
        GATEWAY_PORT=str(gw),
        DEMO_PORT=str(demo),
        CHATKIT_DEMO_BACKEND_PORT=str(backend),
        CHATKIT_STORE_URL=f"sqlite:///{tmp_path / 'threads.db'}",  # not the checkout's
    )
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # not a sub-make of `make test`
        env.pop(name, None)
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "make", "run", cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    pgid = proc.pid
    origin = f"http://localhost:{demo}"
    try:
        banner = await wait_for_banner(proc, log)
        assert "using the built-in stub upstream" in banner
        assert f"http://localhost:{demo}/proxy.html?gateway=http://localhost:{gw}" in banner
        assert f"http://localhost:{demo}/agent.html?gateway=http://localhost:{gw}" in banner
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            async with http.post(
                f"http://127.0.0.1:{gw}/api/chatkit/session", headers={"Origin": origin}, json={}
            ) as resp:
                assert resp.status == 200, await resp.text()
                token = await resp.json()
            assert token["client_secret"].startswith("ek_stub_"), token
            assert isinstance(token["expires_at"], int)

            async with http.get(f"http://127.0.0.1:{demo}/proxy.html") as resp:
                assert resp.status == 200 and resp.content_type == "text/html"
            async with http.get(f"http://127.0.0.1:{demo}/") as resp:
                assert resp.status == 200 and "<html" in (await resp.text()).lower()
            async with http.get(f"http://127.0.0.1:{gw}/") as resp:  # the printed link
                assert resp.status == 200
                assert (await resp.json())["upstream"] == "stub"

            async with http.post(
                f"http://127.0.0.1:{gw}/chatkit",
                headers={"Origin": origin},
                json=create_req("hello from make run"),
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.content_type == "text/event-stream"
                assert resp.headers["Access-Control-Allow-Origin"] == origin
                events = [event async for event in sse_events(resp)]
            kinds = [e["type"] for e in events]
            assert kinds[0] == "thread.created", kinds
            deltas = [
                e["update"]["delta"]
                for e in events
                if e["type"] == "thread.item.updated"
                and e["update"]["type"] == "assistant_message.content_part.text_delta"
            ]
            assert len(deltas) > 1, kinds  # streamed word by word, not in one piece
            assert "hello from make run" in "".join(deltas)

            # The agent route knows this project's docs (knowledge over the demo server's
            # /project/ sitemap, ingested at start) and answers with links to their pages.
            assert f"http://localhost:{demo}/project/" in banner
            pages = await knowledge_pages(http, gw)
            assert pages >= 3, pages  # README, SECURITY, docs/*
            async with http.post(
                f"http://127.0.0.1:{gw}/chatkit/assistant",
                headers={"Origin": origin, "X-Device-Id": "make-run-device-0123456789"},
                json=create_req("How do I rotate the OpenAI API key on Kubernetes?"),
            ) as resp:
                assert resp.status == 200, await resp.text()
                events = [event async for event in sse_events(resp)]
            done = [
                e["item"]
                for e in events
                if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
            ]
            annotations = done[-1]["content"][0]["annotations"]
            urls = [a["source"]["url"] for a in annotations if a["source"]["type"] == "url"]
            assert urls and urls[0].startswith(f"http://localhost:{demo}/project/"), annotations
            async with http.get(urls[0].replace("localhost", "127.0.0.1")) as resp:
                assert resp.status == 200 and resp.content_type == "text/html"  # the link works
    finally:
        # Ctrl-C in the terminal: SIGINT to the whole foreground process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        while group_alive(pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = group_alive(pgid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        status = await proc.wait()
    assert not left, f"processes of make run still running {STOP_SECONDS}s after Ctrl-C"
    # A clean stop: scripts/run.sh exits 0, so make reports no "*** [run] Error"; make
    # itself, interrupted too, ends as interrupted programs do (by SIGINT: 130 in a shell).
    assert "make: ***" not in log.read_text(), log.read_text()
    assert status in (0, -signal.SIGINT), (status, log.read_text())
    assert not any(listening(p) for p in (gw, demo, backend)), log.read_text()
