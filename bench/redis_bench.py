"""`python -m bench.redis_bench`: the Redis limiter against the memory one and `limits`.

Gateway level: a gateway process (stub upstream, so the limiter's cost is not hidden
behind an upstream's) pinned to core 0; wrk and redis-server on core 1. Every request
spends two limits (client_ip over ~10k addresses sent as X-Forwarded-For, and global),
raised so nothing is refused. Backends, interleaved per round, medians reported:
`memory`; `redis` (this project's GCRA script); `limits-sliding` and `limits-moving`
(the `limits` library's async Redis storage behind the same LimitStorage interface).
Round trips per request come from Redis `INFO commandstats`.

Limiter level: the same two-limit check straight on each storage in one process, with
round trips counted in the client (every packet redis-py writes).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import TOKEN_ROUTE, cpu_seconds, free_port, use_uvloop
from bench.limits_adapter import LimitsStorage, limiter_level
from gateway.app import create_app
from gateway.logs import setup_logging
from gateway.policy import parse_policy
from tests.support.redis_server import RedisServer

IGNORED = {"info", "config|resetstat", "hello", "client|setinfo", "ping"}
BACKENDS = ("memory", "redis", "limits-sliding", "limits-moving")
POLICY = """
server: {{host: 127.0.0.1, port: {port}, trusted_proxies: [127.0.0.1/32]}}
upstream: {{api_key: sk-bench-not-a-real-key}}
limiter: {{backend: {backend}, redis_url: "{redis}", key_prefix: "bench:"}}
routes:
{routes}"""
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://example.org"
local n = 0
request = function()
  n = n + 1
  wrk.headers["X-Forwarded-For"] = "10.0." .. (math.floor(n / 256) % 40) .. "." .. (n % 256)
  return wrk.format()
end
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format('RESULT {"n": %d, "us": %d, "bad": %d, "p50": %d, "p99": %d}\\n',
    s.requests, s.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


async def serve(backend: str, port: int, redis_url: str) -> None:
    setup_logging("INFO")  # the access log costs the same for every backend
    kind = "redis" if backend == "redis" else "memory"
    text = POLICY.format(port=port, backend=kind, redis=redis_url, routes=TOKEN_ROUTE)
    policy = parse_policy(text, env={}, stub_upstream=True)
    storage = None
    if backend.startswith("limits-"):
        storage = LimitsStorage(redis_url, backend.removeprefix("limits-"))
    runner = web.AppRunner(create_app(policy, storage=storage), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def wrk(url: str, conns: int, seconds: float, script: Path) -> dict[str, float]:
    duration = f"-d{max(1, round(seconds))}s"
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", duration, "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def calls(server: RedisServer) -> tuple[dict[str, int], int]:
    """Calls per command, and Redis's own CPU µs for the scripts (nested calls included)."""
    stats = server.info("commandstats")
    fields = {k[8:]: dict(f.split("=") for f in v.split(",")) for k, v in stats.items()}
    usec = sum(int(f["usec"]) for k, f in fields.items() if k.startswith(("eval", "fcall")))
    return {k: int(f["calls"]) for k, f in fields.items()}, usec


def one_run(backend: str, server: RedisServer, conns: int, secs: float, script: Path) -> Any:
    port = free_port()
    argv = ["taskset", "-c", "0", sys.executable, "-m", "bench.redis_bench", "serve"]
    proc = subprocess.Popen([*argv, backend, str(port), server.url], stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/chatkit/session"
        deadline = time.monotonic() + 20
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        wrk(url, conns, 1.0, script)  # warm-up: connections, pools, scripts
        server.command("CONFIG", "RESETSTAT")
        cpu = cpu_seconds(proc.pid)
        result = wrk(url, conns, secs, script)
        cpu = cpu_seconds(proc.pid) - cpu
        n, (stats, usec) = result["n"], calls(server)
        per_req = {k: round(v / n, 2) for k, v in stats.items() if k not in IGNORED}
        rps = n / (result["us"] / 1e6)
        scripts = sum(v for k, v in per_req.items() if k.startswith(("eval", "fcall")))
        return {
            **result,
            **{"rps": rps, "cpu_us": cpu / n * 1e6, "redis_us": usec / n, "scripts": scripts},
            "commands": per_req,
        }
    finally:
        proc.terminate()
        proc.wait(10)
        server.command("FLUSHALL")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    args = parser.parse_args()
    rounds, secs = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        sys.exit("needs wrk and redis-server (apt-get install wrk redis-server)")
    have_limits = importlib.util.find_spec("limits") is not None
    wanted = {"memory", *args.backends.split(",")}  # the baseline is always measured
    backends = [b for b in BACKENDS if b in wanted and (have_limits or "limits" not in b)]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(shutil.which("redis-server") or "", Path(tmp))
        server.start()
        assert server.proc is not None
        subprocess.run(
            ["taskset", "-p", "-c", "1", str(server.proc.pid)], check=True, capture_output=True
        )
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        try:
            runs: dict[tuple[str, int], list[Any]] = {}
            for _ in range(rounds):
                for conns in (32, 1):
                    for backend in backends:
                        r = one_run(backend, server, conns, secs, script)
                        runs.setdefault((backend, conns), []).append(r)
            lib = {}
            if have_limits and "limits-sliding" in backends:
                lib = asyncio.run(limiter_level(server.url, 3000))
        finally:
            server.stop()
    report(runs, lib)


def report(runs: dict[tuple[str, int], list[Any]], lib: dict[str, dict[str, float]]) -> None:
    def med(backend: str, conns: int, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[(backend, conns)]))

    head = ["backend", "req/s (32 conns)", "vs memory", "p99 ms (32)", "p50 / p99 ms (1 conn)"]
    head += ["gateway CPU µs/req", "Redis CPU µs/req", "scripts/req", "Redis commands/req"]
    _table(head)

    def ratio(backend: str) -> str:
        """Median (and range) of per-round ratios: a round's runs are neighbours in time."""
        pairs = zip(runs[(backend, 32)], runs[("memory", 32)], strict=True)
        ratios = [r["rps"] / m["rps"] for r, m in pairs]
        if len(ratios) == 1:
            return f"{ratios[0]:.2f}x"
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    for b in sorted({b for b, _ in runs}, key=BACKENDS.index):
        typical = sorted(runs[(b, 32)], key=lambda r: float(r["scripts"]))[len(runs[(b, 32)]) // 2]
        cmds = ", ".join(f"{k} {v:g}" for k, v in sorted(typical["commands"].items())) or "-"
        _row(
            b,
            f"{med(b, 32, 'rps'):.0f}",
            ratio(b),
            f"{med(b, 32, 'p99') / 1000:.2f}",
            f"{med(b, 1, 'p50') / 1000:.2f} / {med(b, 1, 'p99') / 1000:.2f}",
            f"{med(b, 32, 'cpu_us'):.0f}",
            f"{med(b, 32, 'redis_us'):.0f}",
            f"{med(b, 32, 'scripts'):.2f}",
            cmds,
        )
    print(f"\nnon-2xx or socket errors: {sum(r['bad'] for rs in runs.values() for r in rs)}\n")
    if lib:
        head = ["storage (in-process)", "round trips/check", "p50 / p99 µs (1 at a time)"]
        _table([*head, "checks/s (32 at a time)", "CPU µs/check (32)", "writes/check (32)"])
        for name, m in lib.items():
            _row(
                name,
                f"{m['round_trips']:g}",
                f"{m['p50_us']:.0f} / {m['p99_us']:.0f}",
                f"{m['checks_per_s']:.0f}",
                f"{m['cpu_us']:.0f}",
                f"{m['writes_32']:.2f}",
            )


def _table(head: list[str]) -> None:
    _row(*head)
    _row("---", *["---:"] * (len(head) - 1))


def _row(*cells: str) -> None:
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        use_uvloop()
        asyncio.run(serve(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        main()
