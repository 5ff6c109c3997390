"""`python -m bench.instructions`: CPU per request as instructions counted, not seconds timed.

CPU time on the 2-core bench VM moves ±25% from run to run, so small costs drown in it. The
instructions a server executes per request do not move: each target runs under
`valgrind --tool=callgrind` with counting off, takes a warm-up, then counts (callgrind_control
-i on/off) user-space instructions over exactly N requests; Ir/req = callgrind's totals / N.
Each target runs once, as the count repeats within about 1%.

Targets (the names --targets takes):
- floor: bench/floor.py, a bare aiohttp pass-through with no policy,
- floor-default-gc: the same with CPython's default garbage-collector threshold (gc_tuning.py),
- floor-features: bench/floor_features.py, the floor plus the bench policy's features done
  the cheapest way one handler can — a lower bound for any gateway with those features,
- gateway: `chatkit-gateway serve` with the full bench policy (origin check, two limits raised
  so nothing is refused, metrics, JSON access log),
- gateway-no-log: the same at `--log-level WARNING`, so without the access log,
- gateway-no-limits: the same policy without the route's rate_limits.
The server under test is alone on core 0; the fake upstream and the load client (this module
with --client) share core 1. Results: a Markdown table on stdout,
bench/results/instructions.json. Needs valgrind (callgrind_control comes with it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.__main__ import HERE, POLICY, PY, RESULTS, machine, start
from bench.common import TOKEN_ROUTE, free_port, use_uvloop, wait_ready

WARMUP = 200  # requests before counting starts: connections, pools, caches, lazy imports
START_SECONDS = 300.0  # python under callgrind starts tens of times slower
STOP_SECONDS = 120.0
HEADERS = {"Content-Type": "application/json", "Origin": "https://example.org"}
# The bench route without its limits; .index fails loudly should TOKEN_ROUTE change shape.
NO_LIMITS_ROUTE = TOKEN_ROUTE[: TOKEN_ROUTE.index("    rate_limits:\n")]


@dataclass(frozen=True)
class Target:
    label: str
    gateway: bool
    routes: str = TOKEN_ROUTE
    serve_args: tuple[str, ...] = ()  # the gateway's serve, or the floor's after its URL
    floor_module: str = "bench.floor"


TARGETS = {
    "floor": Target("floor", gateway=False),
    "floor-default-gc": Target(
        "floor, CPython's default GC threshold", gateway=False, serve_args=("--default-gc",)
    ),
    "floor-features": Target(
        "floor + the features at their barest", gateway=False, floor_module="bench.floor_features"
    ),
    "gateway": Target("gateway", gateway=True),
    "gateway-no-log": Target(
        "gateway, no access log", gateway=True, serve_args=("--log-level", "WARNING")
    ),
    "gateway-no-limits": Target("gateway, no rate limits", gateway=True, routes=NO_LIMITS_ROUTE),
}


async def load(url: str, n: int, conns: int) -> dict[int, int]:
    """POST the token request exactly `n` times over `conns` keep-alive connections; the
    answers counted by status."""
    statuses: dict[int, int] = {}
    left = n
    timeout = aiohttp.ClientTimeout(total=STOP_SECONDS)
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=b"{}", headers=HEADERS) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(conns)))
    return statuses


def client_main(url: str, n: int, conns: int) -> int:
    use_uvloop()
    statuses = asyncio.run(load(url, n, conns))
    bad = n - statuses.get(200, 0)
    if bad:
        print(f"{bad} of {n} answers from {url} were not 200: {statuses}", file=sys.stderr)
        return 1
    return 0


def drive(url: str, n: int, conns: int) -> None:
    """The load client in its own process on core 1; raises unless all `n` answers were 200."""
    cmd = [PY, "-m", "bench.instructions", "--client", url,
           "--requests", str(n), "--connections", str(conns)]  # fmt: skip
    subprocess.run(["taskset", "-c", "1", *cmd], check=True, cwd=HERE.parent)


def instrumentation(pid: int, state: str) -> None:
    out = subprocess.run(
        ["callgrind_control", "-i", state, str(pid)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "OK." not in out.stdout:  # callgrind_control exits 0 even when it found no such run
        raise RuntimeError(f"callgrind_control -i {state} {pid}: {out.stdout}{out.stderr}")


def wait_up(proc: subprocess.Popen[bytes], url: str) -> None:
    """Until `url` answers, or fail as soon as the server has exited."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            wait_ready(url, timeout=2.0)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def totals(directory: Path) -> int:
    """The instructions counted, summed over callgrind's output parts."""
    files = sorted(directory.glob("callgrind.out*"))
    if not files:
        raise RuntimeError(f"no callgrind output in {directory}")
    found = [
        int(line.split()[1])
        for f in files
        for line in f.read_text().splitlines()
        if line.startswith("totals:")
    ]
    if not found:
        raise RuntimeError(f"no totals: line in {[f.name for f in files]}")
    return sum(found)


def count(name: str, up_port: int, n: int, conns: int, keep: Path | None = None) -> int:
    """Instructions the target's server executes over `n` requests, after a warm-up; with
    `keep`, callgrind's output stays in keep/<name> (for callgrind_annotate)."""
    target = TARGETS[name]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if keep is not None:
            tmp = str(keep / name)
            shutil.rmtree(tmp, ignore_errors=True)
            Path(tmp).mkdir(parents=True)
        if target.gateway:
            policy = Path(tmp) / "gateway.yaml"
            policy.write_text(POLICY.format(port=port, upstream=up_port, routes=target.routes))
            cmd = [PY, "-m", "gateway", "serve", "--config", str(policy), *target.serve_args]
        else:
            upstream = f"http://127.0.0.1:{up_port}/v1/chatkit/sessions"
            cmd = [PY, "-m", target.floor_module, str(port), upstream, *target.serve_args]
        out, log = Path(tmp) / "callgrind.out", Path(tmp) / "valgrind.log"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={out}", f"--log-file={log}"]  # fmt: skip
        # A fixed hash seed: the same dict and set probes every run.
        proc = start([*valgrind, *cmd], "0", env={"PYTHONHASHSEED": "0"})
        try:
            base = f"http://127.0.0.1:{port}"
            wait_up(proc, base + ("/healthz" if target.gateway else "/"))
            url = base + "/api/chatkit/session"
            drive(url, WARMUP, conns)
            instrumentation(proc.pid, "on")
            drive(url, n, conns)
            instrumentation(proc.pid, "off")
            proc.send_signal(signal.SIGINT)  # callgrind writes its output as the server exits
            proc.wait(timeout=STOP_SECONDS)
        except Exception:
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print("valgrind log, last lines:", *tail, sep="\n  ", file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        return totals(Path(tmp))


def valgrind_version() -> str:
    out = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}, {report['valgrind']}",
        f"User-space instructions (callgrind Ir) per request, {report['requests']:,} requests "
        f"over {report['connections']} connections after {report['warmup']} warm-up requests, "
        f"fake upstream answering after {report['upstream_ms']} ms",
        "",
        "| target | Ir/req | ratio to floor |",
        "| --- | ---: | ---: |",
    ]
    for t in report["targets"].values():
        ratio = "—" if t["ratio_to_floor"] is None else f"{t['ratio_to_floor']:.3f}"
        lines.append(f"| {t['label']} | {t['ir_per_req']:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per target")
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive conns")
    parser.add_argument("--upstream-ms", type=int, default=0, help="fake upstream latency")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep callgrind's output here")
    parser.add_argument("--client", metavar="URL", help="internal: be the load client for URL")
    args = parser.parse_args()
    if args.client:
        sys.exit(client_main(args.client, args.requests, args.connections))
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(
            f"bench.instructions counts instructions with valgrind's callgrind, but "
            f"{' and '.join(missing)} not found on PATH: apt-get install valgrind",
            file=sys.stderr,
        )
        sys.exit(2)
    n, conns = args.requests, args.connections
    counted: dict[str, int] = {}
    up_port = free_port()
    upstream = start([PY, "-m", "bench.fake_upstream", str(up_port), str(args.upstream_ms)], "1")
    try:
        wait_ready(f"http://127.0.0.1:{up_port}/")
        for name in args.targets:
            counted[name] = count(name, up_port, n, conns, args.keep)
            print(f"{name}: {counted[name] / n:,.0f} Ir/req", file=sys.stderr)
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    floor = counted["floor"] / n if "floor" in counted else None
    report = {
        "machine": machine(),
        "valgrind": valgrind_version(),
        # Servers and client run on uvloop when it is installed; counts shift without it.
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "requests": n,
        "connections": conns,
        "upstream_ms": args.upstream_ms,
        "warmup": WARMUP,
        "targets": {
            name: {
                "label": TARGETS[name].label,
                "ir_total": total,
                "ir_per_req": total / n,
                "ratio_to_floor": total / n / floor if floor else None,
            }
            for name, total in counted.items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "instructions.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))


if __name__ == "__main__":
    main()
