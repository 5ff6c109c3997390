"""`python -m bench.attachment_rss`: the gateway's memory under the worst attachments its
default policy allows (issue 20), measured on the real process.

1. Turns: ten 10 MiB PDFs (`attachments.max_bytes`, and the 10 a message may carry) in one
   message, then more turns of the same thread (`--turns`, 6 in all). Each turn inlines at most
   `attachments.max_bytes_per_turn` (20 MiB); the rest are named in a line of text. For
   each turn: the model request's size as the fake upstream received it, and the gateway's
   peak RSS during the turn (VmHWM, reset before it through /proc/PID/clear_refs).
2. Preview flood: 60 GETs of a 10 MiB image's preview from one address that read the
   status line and then nothing (a 4 KiB receive window): how many were served, how many
   refused, and the gateway's RSS while they hang (and its peak).

The fake upstream is bench/agent_upstream.py's (the `openai` SDK's own event types), run
in this process with a body limit large enough for what the gateway sends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from bench.agent_upstream import API_KEY, Upstream
from bench.common import free_port, status_kib, wait_ready

HERE = Path(__file__).resolve().parent
ORIGIN = "https://example.org"
MIB = 1024 * 1024
POLICY = """
server: {{host: 127.0.0.1, port: {port}, shutdown_grace_seconds: 0}}
upstream: {{base_url: "http://127.0.0.1:{upstream}/v1", api_key: {key}, timeout_seconds: 60,
            max_rate: null}}
limiter: {{backend: memory}}
routes:
  - name: assistant
    path: /chatkit/assistant
    kind: chatkit_agent
    allowed_origins: [{origin}]
    agent: {{model: gpt-6.1-terra, instructions: Answer briefly.}}
    store: {{url: "sqlite:///{db}"}}
    attachments: {{}}            # the defaults: 10 MiB each, 20 MiB a turn, 200 MiB an address
    rate_limits:
      - {{key: client_ip, requests: 1000000, per: 1h}}
    token_budgets:
      - {{key: global, tokens: 1000000000000, per: 1d}}
"""
HEADERS = {"Origin": ORIGIN, "Content-Type": "application/json", "X-Device-Id": "bench-" + "a" * 16}


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


async def start_upstream(sizes: list[int]) -> tuple[web.AppRunner, int]:
    upstream = Upstream(deltas=5, delay=0.0, api_key=API_KEY)

    async def responses(request: web.Request) -> web.StreamResponse:
        sizes.append(request.content_length or 0)
        return await upstream.responses(request)

    app = web.Application(client_max_size=1024 * MIB)
    app.router.add_post("/v1/responses", responses)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def upload(http: aiohttp.ClientSession, base: str, name: str, data: bytes, mime: str) -> Any:
    body = {"type": "attachments.create",
            "params": {"name": name, "size": len(data), "mime_type": mime}}  # fmt: skip
    async with http.post(base + "/chatkit/assistant", json=body, headers=HEADERS) as r:
        made = await r.json()
        assert r.status == 200, made
    path = URL(made["upload_descriptor"]["url"]).path_qs
    async with http.post(base + path, data=data, headers={"Origin": ORIGIN}) as r:
        assert r.status == 200, await r.text()
    return made


async def turn(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> str:
    async with http.post(base + "/chatkit/assistant", data=json.dumps(body), headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        thread = ""
        async for line in r.content:
            if line.startswith(b"data: ") and b'"thread.created"' in line:
                thread = json.loads(line[6:])["thread"]["id"]
        return thread


def message(text: str, ids: list[str]) -> dict[str, Any]:
    return {"content": [{"type": "input_text", "text": text}], "attachments": ids,
            "inference_options": {}}  # fmt: skip


def stalled_preview(port: int, path: str) -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    sock.settimeout(10)
    return sock, sock.recv(12).decode(errors="replace")[9:12]


async def run(pid: int, base: str, port: int, sizes: list[int], turns_n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await turn(http, base, {"type": "threads.create", "params": {"input": message("warm", [])}})
        out["rss_start_mib"] = mib(status_kib(pid, "VmRSS"))
        reset_peak(pid)
        pdfs = [
            await upload(http, base, f"doc{i}.pdf", b"%PDF-1.4\n" + os.urandom(10 * MIB - 9),
                         "application/pdf")
            for i in range(10)
        ]  # fmt: skip
        out["rss_before_turns_mib"] = mib(status_kib(pid, "VmRSS"))
        out["peak_rss_uploads_mib"] = mib(status_kib(pid, "VmHWM"))
        turns = []
        thread = ""
        for i in range(turns_n):
            reset_peak(pid)
            if i == 0:
                body = {
                    "type": "threads.create",
                    "params": {"input": message("read these", [p["id"] for p in pdfs])},
                }
            else:
                body = {"type": "threads.add_user_message",
                        "params": {"thread_id": thread, "input": message("and?", [])}}  # fmt: skip
            made = await turn(http, base, body)
            thread = thread or made
            turns.append({"turn": i + 1, "model_request_mib": round(sizes[-1] / MIB, 1),
                          "peak_rss_mib": mib(status_kib(pid, "VmHWM")),
                          "rss_after_mib": mib(status_kib(pid, "VmRSS"))})  # fmt: skip
            print(json.dumps(turns[-1]), file=sys.stderr)
        out["turns"] = turns
        image = await upload(http, base, "big.png", b"\x89PNG" + os.urandom(10 * MIB - 4),
                             "image/png")  # fmt: skip
        path = URL(image["preview_url"]).path_qs
        reset_peak(pid)
        before = status_kib(pid, "VmRSS")
        loop = asyncio.get_running_loop()
        flood = [await loop.run_in_executor(None, stalled_preview, port, path) for _ in range(60)]
        await asyncio.sleep(1)
        statuses = [s for _, s in flood]
        out["preview_flood"] = {
            "gets": len(flood), "served": statuses.count("200"),
            "refused_429": statuses.count("429"),
            "rss_before_mib": mib(before), "rss_held_mib": mib(status_kib(pid, "VmRSS")),
            "peak_rss_mib": mib(status_kib(pid, "VmHWM")),
        }  # fmt: skip
        for sock, _ in flood:
            sock.close()
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes: list[int] = []
    runner, upstream_port = await start_upstream(sizes)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "gateway.yaml"
        policy.write_text(POLICY.format(port=port, upstream=upstream_port, key=API_KEY,
                                        origin=ORIGIN, db=Path(tmp) / "threads.db"))  # fmt: skip
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(policy)]
        proc = subprocess.Popen(cmd, cwd=HERE.parent,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_ready, base + "/healthz", 60)
            return await run(proc.pid, base, port, sizes, args.turns)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=6, help="turns of the thread")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
