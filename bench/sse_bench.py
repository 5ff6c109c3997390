"""`python -m bench.sse_bench`: 1,000 concurrent SSE streams through one gateway process.

Three processes: the gateway (`python -m gateway serve`, a chatkit_proxy route with an
origin list, a per-client and a `types:` limit and a stream cap, so every stream runs the
full policy) pinned to core 0; a bare aiohttp SSE backend and this load client sharing
core 1. The backend sends each stream's first event at once, then one event every
1/rate seconds — ChatKit-sized text deltas — until the client hangs up.

Measured, with all streams open and flowing:
- added first-event latency: probe streams opened one at a time, interleaved: straight to
  the backend, through the gateway, and through a bare aiohttp relay (the "floor", also
  on core 0) that shows what aiohttp and the machine cost before any gateway code;
- CPU per event: gateway CPU time (utime+stime) over a window / events the clients got;
- RSS per open stream: gateway RSS with the streams open minus before, / streams.
Also checked: every stream closed by the client is seen by the backend as cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import (
    SESSION,
    cpu_seconds,
    free_port,
    pooled_session,
    status_kib,
    use_uvloop,
    wait_ready,
)
from gateway.gc_tuning import tune_gc

PY = sys.executable
ORIGIN = "https://example.org"
EVENT = (
    b'data: {"type":"thread.item.updated","item_id":"msg_0123abcd","update":{"type":'
    b'"assistant_message.content_part.text_delta","content_index":0,"delta":"lorem ipsum "}}'
    b"\n\n"
)
BODY = json.dumps(
    {"type": "threads.add_user_message", "params": {"thread_id": "thr_1", "input": {}}}
).encode()
POLICY = """
server: {{host: 127.0.0.1, port: {port}, shutdown_grace_seconds: 0}}
upstream: {{api_key: sk-bench-unused}}
limiter: {{backend: memory}}
routes:
  - name: chat
    path: /chatkit
    kind: chatkit_proxy
    target: http://127.0.0.1:{backend}/sse
    allowed_origins: [{origin}]
    stream_idle_timeout_seconds: 300
    max_streams_per_client: 10000
    rate_limits:
      - {{key: client_ip, requests: 1000000000, per: 1h}}
      - {{key: client_ip, requests: 1000000000, per: 1h, types: [threads.add_user_message]}}
"""


# --- the backend (a subprocess: `python -m bench.sse_bench backend PORT`) -----------------


def run_backend(port: int) -> None:
    cancelled = 0

    async def sse(request: web.Request) -> web.StreamResponse:
        nonlocal cancelled
        await request.read()
        count = int(request.query.get("n", "0"))  # 0: until the client leaves
        interval = float(request.query.get("interval", "1"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            sent = 0
            while True:
                await response.write(EVENT)
                sent += 1
                if sent == count:
                    break
                await asyncio.sleep(interval)
        except (asyncio.CancelledError, ConnectionError):
            cancelled += 1
            raise
        await response.write_eof()
        return response

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"cancelled": cancelled})

    app = web.Application()
    app.router.add_post("/sse", sse)
    app.router.add_get("/stats", stats)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, handler_cancellation=True
    )


def run_floor(port: int, upstream: str) -> None:
    """A bare aiohttp relay (no policy, no metrics, no logs): what aiohttp itself costs, in
    a process set up as the gateway's (uvloop, gc_tuning's threshold)."""
    use_uvloop()
    tune_gc()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        query = request.query_string
        async with request.app[SESSION].post(f"{upstream}?{query}", data=body) as up:
            response = web.StreamResponse(headers={"Content-Type": up.content_type})
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(pooled_session(limit=0))
    app.router.add_post("/chatkit", relay)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the load client --------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


class Streams:
    """Long-lived streams; counts the events they receive."""

    def __init__(self) -> None:
        self.events = 0
        self.first: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0

    async def one(self, session: aiohttp.ClientSession, url: str) -> None:
        started = time.perf_counter()
        async with session.post(url, data=BODY, headers={"Origin": ORIGIN}) as resp:
            assert resp.status == 200, resp.status
            async for chunk in resp.content.iter_any():
                if started:
                    self.first.append(time.perf_counter() - started)
                    started = 0.0
                    self.ready += 1
                self.events += chunk.count(b"\n\n")


async def first_event(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(url, data=BODY, headers={"Origin": ORIGIN}) as resp:
        await resp.content.readany()
        elapsed = time.perf_counter() - started
        await resp.read()
    return elapsed


async def load(
    args: argparse.Namespace, gw_pid: int, gw: str, backend: str, floor: str
) -> dict[str, Any]:
    interval = 1 / args.rate
    stream_url = f"{gw}/chatkit?interval={interval}"
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session, aiohttp.ClientSession() as probe:
        paths = {
            "direct": f"{backend}/sse?n=1",
            "floor": f"{floor}/chatkit?n=1",
            "gateway": f"{gw}/chatkit?n=1",
        }
        for _ in range(20):  # warm-up: imports, pools, first-request paths
            for url in paths.values():
                await first_event(probe, url)
        rss_before = rss_kib(gw_pid)
        streams = Streams()
        for i in range(0, args.streams, 100):  # in batches: no SYN flood
            batch = min(100, args.streams - i)
            streams.tasks += [
                asyncio.create_task(streams.one(session, stream_url)) for _ in range(batch)
            ]
            while streams.ready < i + batch:
                await asyncio.sleep(0.01)
        await asyncio.sleep(2 * interval + 1)  # steady state
        rss_open = rss_kib(gw_pid)
        cpu0, ev0, t0 = cpu_seconds(gw_pid), streams.events, time.perf_counter()
        await asyncio.sleep(args.seconds)
        cpu1, ev1, t1 = cpu_seconds(gw_pid), streams.events, time.perf_counter()
        probes: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.probes):  # interleaved, so drift hits all alike
            for name, url in paths.items():
                probes[name].append(await first_event(probe, url))
        for task in streams.tasks:
            task.cancel()
        await asyncio.gather(*streams.tasks, return_exceptions=True)
        await asyncio.sleep(1.0)
        async with probe.get(f"{backend}/stats") as resp:
            cancelled = (await resp.json())["cancelled"]
        async with probe.get(f"{gw}/metrics") as resp:
            open_after = _gauge(await resp.text(), "chatkit_gateway_open_streams")
    events = ev1 - ev0
    ms = {name: statistics.median(v) * 1e3 for name, v in probes.items()}
    p90 = {name: statistics.quantiles(v, n=10)[-1] * 1e3 for name, v in probes.items()}
    return {
        "streams": args.streams,
        "events_per_second": round(events / (t1 - t0)),
        "first_event_ms_p50": {name: round(v, 3) for name, v in ms.items()},
        "added_first_event_ms_p50": round(ms["gateway"] - ms["direct"], 3),
        "added_first_event_ms_p90": round(p90["gateway"] - p90["direct"], 3),
        "floor_added_first_event_ms_p50": round(ms["floor"] - ms["direct"], 3),
        "opening_first_event_ms_p50": round(statistics.median(streams.first) * 1e3, 2),
        "gateway_cpu_percent": round((cpu1 - cpu0) / (t1 - t0) * 100, 1),
        "cpu_us_per_event": round((cpu1 - cpu0) / events * 1e6, 1) if events else None,
        "rss_kib_per_stream": round((rss_open - rss_before) / args.streams, 1),
        "rss_mib_before": round(rss_before / 1024, 1),
        "rss_mib_open": round(rss_open / 1024, 1),
        "backend_saw_cancelled": cancelled,
        "open_streams_after": open_after,
    }


def _gauge(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2.0, help="events/s on each stream")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU window")
    parser.add_argument("--probes", type=int, default=300, help="latency probes per path")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("role", nargs="?", default="client", choices=["client", "backend", "floor"])
    parser.add_argument("port", nargs="?", type=int)
    parser.add_argument("upstream", nargs="?")
    args = parser.parse_args()
    if args.role == "backend":
        run_backend(args.port)
        return
    if args.role == "floor":
        run_floor(args.port, args.upstream)
        return
    # The gateway gets core 0 to itself; backend and client share the rest (or core 0 too).
    others = "1" if (os.cpu_count() or 1) > 1 else "0"
    os.sched_setaffinity(0, {int(others)})
    use_uvloop()
    b_port, g_port, f_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "gateway.yaml"
        policy.write_text(POLICY.format(port=g_port, backend=b_port, origin=ORIGIN))
        backend_cmd = [PY, "-m", "bench.sse_bench", "backend", str(b_port)]
        gateway_cmd = [PY, "-m", "gateway", "serve", "--config", str(policy)]
        upstream = f"http://127.0.0.1:{b_port}/sse"
        floor_cmd = [PY, "-m", "bench.sse_bench", "floor", str(f_port), upstream]
        for core, cmd in ((others, backend_cmd), ("0", gateway_cmd), ("0", floor_cmd)):
            pinned = ["taskset", "-c", core, *cmd]
            procs.append(subprocess.Popen(pinned, stdout=subprocess.DEVNULL))
        try:
            gw, backend = f"http://127.0.0.1:{g_port}", f"http://127.0.0.1:{b_port}"
            floor = f"http://127.0.0.1:{f_port}"
            for url in (gw + "/healthz", backend + "/stats", floor + "/"):
                wait_ready(url, timeout=20.0)
            result = asyncio.run(load(args, procs[1].pid, gw, backend, floor))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
