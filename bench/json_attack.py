"""One hostile JSON body against a real `chatkit-gateway serve`: memory and event-loop stalls.

    .venv/bin/python -m bench.json_attack [--root DIR] [--mib 10] [--clients 4] [--seconds 8]

`--root` is the checkout whose gateway is run (default: this one), so the same attack can
be measured before and after a change (`git worktree add /tmp/before HEAD`, then
`--root /tmp/before`). For each scenario a fresh gateway (`--stub-upstream`, one
chatkit_proxy route in front of a backend that answers `{}`) takes `--clients` connections
each POSTing `{"type":"threads.list","a":[[],[],…]}` of about `--mib` MiB to `/chatkit` in
a loop, while `/healthz` is probed every 20 ms. Reported per scenario: the gateway's RSS
before, its peak (VmHWM), `/healthz` latency (median, p99, max) during the attack, and the
attack's answers (status counts, median time per answer).

Scenarios: `open` (limits far above the attack) and `limited` (client_ip 1 per hour:
after the first request every one is refused), each with a Content-Length and chunked
(`*_chunked`: nothing to refuse on up front, so the limit or the cap must stop it).
`/healthz` is probed from a process of its own, so the attacker's own work does not
show up as gateway latency.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import free_port, status_kib, wait_ready

HERE = Path(__file__).resolve().parent
ORIGIN = "https://example.org"

POLICY = """\
server: {{host: 127.0.0.1, port: {port}}}
limiter: {{backend: memory}}
routes:
  - name: chat
    path: /chatkit
    kind: chatkit_proxy
    target: http://127.0.0.1:{backend}/chatkit
    allowed_origins: [{origin}]
    rate_limits: [{{key: client_ip, requests: {requests}, per: 1h}}]
"""


# name, the limit's requests per hour, whether the body is sent chunked (no Content-Length)
SCENARIOS = [
    ("open", 1_000_000_000, False),
    ("limited", 1, False),
    ("open_chunked", 1_000_000_000, True),
    ("limited_chunked", 1, True),
]


def attack_body(mib: float) -> bytes:
    head, tail = b'{"type":"threads.list","params":{},"a":[', b"[]]}"
    count = (int(mib * (1 << 20)) - len(head) - len(tail) - 64) // 3
    return head + b"[]," * count + tail


async def backend(port: int) -> web.AppRunner:
    async def chatkit(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"data": [], "has_more": False})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/chatkit", chatkit)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def scenario(
    root: Path, name: str, requests: int, chunked: bool, args: argparse.Namespace
) -> dict[str, Any]:
    port, backend_port = free_port(), free_port()
    runner = await backend(backend_port)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(
            POLICY.format(port=port, backend=backend_port, origin=ORIGIN, requests=requests)
        )
        env = {**os.environ, "PYTHONPATH": str(root)}
        env.pop("OPENAI_API_KEY", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--stub-upstream"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_ready, base + "/healthz")
            await asyncio.sleep(0.5)
            rss_before = status_kib(proc.pid, "VmRSS")
            body = attack_body(args.mib)
            result = await attack(base, body, args.clients, args.seconds, chunked)
            result.update(
                scenario=name,
                rss_before_mib=round(rss_before / 1024, 1),
                rss_peak_mib=round(status_kib(proc.pid, "VmHWM") / 1024, 1),
                rss_after_mib=round(status_kib(proc.pid, "VmRSS") / 1024, 1),
            )
            return result
        finally:
            proc.kill()
            proc.wait(10)
            await runner.cleanup()


PROBER = """
import json, sys, time, urllib.request
url, stop = sys.argv[1], time.monotonic() + float(sys.argv[2])
out = []
while time.monotonic() < stop:
    started = time.perf_counter()
    urllib.request.urlopen(url, timeout=60).read()
    out.append((time.perf_counter() - started) * 1000)
    time.sleep(0.02)
print(json.dumps(out))
"""


async def attack(
    base: str, body: bytes, clients: int, seconds: float, chunked: bool
) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    statuses: collections.Counter[int | str] = collections.Counter()
    answer_s: list[float] = []
    health_ms: list[float] = []
    headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    async def one_client() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                data = chunks() if chunked else body
                try:
                    async with http.post(base + "/chatkit", data=data, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1
                answer_s.append(time.perf_counter() - started)

    async def prober() -> None:
        """In a process of its own, so the attacker's work does not delay the probes."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBER, base + "/healthz", str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        health_ms.extend(json.loads(out))

    await asyncio.gather(prober(), *(one_client() for _ in range(clients)))
    return {
        "body_mib": round(len(body) / (1 << 20), 2),
        "answers": dict(statuses),
        "answer_median_s": round(statistics.median(answer_s), 4) if answer_s else None,
        "healthz_ms": {
            "median": round(statistics.median(health_ms), 1),
            "p99": round(percentile(health_ms, 0.99), 1),
            "max": round(max(health_ms), 1),
            "samples": len(health_ms),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE.parent, help="checkout to run")
    parser.add_argument("--mib", type=float, default=9.9, help="attack body size")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    for name, requests, chunked in SCENARIOS:
        result = await scenario(args.root.resolve(), name, requests, chunked, args)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
