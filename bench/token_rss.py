"""Resident memory of a token-only gateway: after start, and after a few thousand requests.

A gateway with no `chatkit_agent` route must not pay for the `agent` extra (openai-chatkit,
the Agents SDK, SQLAlchemy…): the same process with one agent route is measured beside it,
in the same run, so that the difference is what the extra costs when it is imported.
Each is a real `chatkit-gateway serve` process in front of bench/fake_upstream.py.

Run: .venv/bin/python -m bench.token_rss [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench.common import TOKEN_ROUTE, free_port, status_kib, wait_ready

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
TARGET_MIB = 60.0

POLICY = """
server: {{host: 127.0.0.1, port: {port}}}
upstream:
  base_url: http://127.0.0.1:{upstream}/v1
  api_key: sk-bench-not-a-real-key
  max_rate: null
limiter: {{backend: memory}}
routes:
{routes}"""

AGENT_ROUTE = """\
  - name: helper
    path: /api/agent
    kind: chatkit_agent
    allowed_origins: [https://example.org]
    rate_limits: [{{key: client_ip, requests: 1000, per: 1h}}]
    agent: {{model: gpt-6.1-terra, instructions: Answer briefly.}}
    store: {{url: "sqlite:///{db}"}}
"""


async def _requests(url: str, n: int, conns: int = 16) -> int:
    """`n` token requests over `conns` connections; how many were not 200."""
    failed = 0
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as http:

        async def worker() -> None:
            nonlocal failed
            for _ in queue:
                async with http.post(url, json={}, headers={"Origin": "https://example.org"}) as r:
                    await r.read()
                    failed += r.status != 200

        await asyncio.gather(*(worker() for _ in range(conns)))
    return failed


def measure(upstream: int, with_agent: bool, requests: int) -> dict[str, float]:
    """One gateway process: RSS (MiB) once healthy, then after `requests` token requests."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        routes = TOKEN_ROUTE + (AGENT_ROUTE.format(db=Path(tmp) / "t.db") if with_agent else "")
        config = Path(tmp) / "gateway.yaml"
        config.write_text(POLICY.format(port=port, upstream=upstream, routes=routes))
        proc = subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/healthz")
            start = status_kib(proc.pid, "VmRSS") / 1024
            url = f"http://127.0.0.1:{port}/api/chatkit/session"
            failed = asyncio.run(_requests(url, requests))
            return {
                "start_mib": start,
                "after_mib": status_kib(proc.pid, "VmRSS") / 1024,
                "peak_mib": status_kib(proc.pid, "VmHWM") / 1024,
                "failed": float(failed),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    up_port = free_port()
    upstream = subprocess.Popen([PY, "-m", "bench.fake_upstream", str(up_port), "0"], cwd=ROOT)
    results: dict[str, list[dict[str, float]]] = {"token only": [], "token + agent route": []}
    try:
        wait_ready(f"http://127.0.0.1:{up_port}/")
        for _ in range(args.rounds):  # interleaved: both see the same machine
            results["token only"].append(measure(up_port, False, args.requests))
            results["token + agent route"].append(measure(up_port, True, args.requests))
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    print(f"{args.rounds} rounds, {args.requests} token requests each, median (MiB):")
    print("| policy | RSS after start | RSS after requests | peak RSS | non-200 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"| {name} | {med('start_mib'):.1f} | {med('after_mib'):.1f} "
            f"| {med('peak_mib'):.1f} | {sum(r['failed'] for r in runs):.0f} |"
        )
    worst = max(r["peak_mib"] for r in results["token only"])
    verdict = "met" if worst <= TARGET_MIB else "NOT met"
    print(f"token-only peak RSS {worst:.1f} MiB; target ≤ {TARGET_MIB:.0f} MiB: {verdict}")


if __name__ == "__main__":
    main()
