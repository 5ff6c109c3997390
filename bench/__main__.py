"""`make bench`: the gateway against the framework floor, interleaved, server on one core.

Targets per scenario (upstream latency / connections):
- upstream: wrk straight at the fake upstream (its own ceiling),
- floor: bench/floor.py, a bare aiohttp pass-through with no policy,
- gateway: `chatkit-gateway serve` with a full policy (origin check, two limits raised so
  nothing is refused, metrics, JSON access log).
The server under test is pinned to core 0; wrk and the fake upstream share core 1.
Results: bench/results/results.json, bench/results/chart.png, a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import TOKEN_ROUTE, cpu_seconds, free_port, status_kib, wait_ready
from bench.limiter_memory import measure_limiter_memory

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PY = sys.executable

# wrk's connections all come from 127.0.0.1, one address: the per-client cap (64 by default)
# would refuse most of 256 and flatter req/s with fast 503s. Raised to max_connections.
POLICY = """
server: {{host: 127.0.0.1, port: {port}, max_connections_per_client: 4096}}
upstream:
  base_url: http://127.0.0.1:{upstream}/v1
  api_key: sk-bench-not-a-real-key
  timeout_seconds: 10
  retries: 2
  max_rate: {{requests: 1000000, per: 1s}}
limiter: {{backend: memory}}
routes:
{routes}"""


@dataclass
class Run:
    scenario: str
    target: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float | None
    peak_rss_mib: float | None
    errors: int


def peak_rss_mib(pid: int) -> float:
    return status_kib(pid, "VmHWM") / 1024


def wrk(url: str, conns: int, seconds: float) -> dict[str, Any]:
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds only
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", duration, "--latency",
         "-s", str(HERE / "post.lua"), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def start(cmd: list[str], core: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", core, *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=HERE.parent,
    )


def measure(
    scenario: str, target: str, rnd: int, url: str, pid: int | None, conns: int, secs: float
) -> Run:
    wrk(url, conns, min(2.0, secs))  # warm-up: connections, caches, JIT-free but still
    before = cpu_seconds(pid) if pid else 0.0
    result = wrk(url, conns, secs)
    after = cpu_seconds(pid) if pid else 0.0
    n = result["requests"]
    return Run(
        scenario,
        target,
        rnd,
        rps=n / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        cpu_us_per_req=(after - before) / n * 1e6 if pid and n else None,
        peak_rss_mib=peak_rss_mib(pid) if pid else None,
        errors=result["errors"] + result["non2xx"],
    )


def run_target(scenario: str, target: str, rnd: int, up_port: int, conns: int, secs: float) -> Run:
    if target == "upstream":
        url = f"http://127.0.0.1:{up_port}/v1/chatkit/sessions"
        return measure(scenario, target, rnd, url, None, conns, secs)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if target == "floor":
            upstream = f"http://127.0.0.1:{up_port}/v1/chatkit/sessions"
            proc = start([PY, "-m", "bench.floor", str(port), upstream], "0")
        else:
            policy = Path(tmp) / "gateway.yaml"
            policy.write_text(POLICY.format(port=port, upstream=up_port, routes=TOKEN_ROUTE))
            proc = start([PY, "-m", "gateway", "serve", "--config", str(policy)], "0")
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base + ("/healthz" if target == "gateway" else "/"))
            return measure(
                scenario, target, rnd, base + "/api/chatkit/session", proc.pid, conns, secs
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def summarise(runs: list[Run]) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in runs:
        out.setdefault(r.scenario, {}).setdefault(r.target, {})
    for scenario, targets in out.items():
        for target in targets:
            mine = [r for r in runs if r.scenario == scenario and r.target == target]

            def med(field: str, mine: list[Run] = mine) -> float | None:
                values = [getattr(r, field) for r in mine if getattr(r, field) is not None]
                return statistics.median(values) if values else None

            targets[target] = {
                "rps": med("rps"),
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "cpu_us_per_req": med("cpu_us_per_req"),
                "peak_rss_mib": max((r.peak_rss_mib or 0.0) for r in mine) or None,
                "errors": float(sum(r.errors for r in mine)),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s: a smoke run")
    args = parser.parse_args()
    rounds, secs = (1, 3.0) if args.quick else (args.rounds, args.seconds)
    scenarios = [("0ms/64c", 0.0, 64), ("100ms/256c", 100.0, 256)]
    runs: list[Run] = []
    for name, latency, conns in scenarios:
        up_port = free_port()
        upstream = start([PY, "-m", "bench.fake_upstream", str(up_port), str(latency)], "1")
        try:
            wait_ready(f"http://127.0.0.1:{up_port}/")
            for rnd in range(rounds):
                order = ["floor", "gateway"] if rnd % 2 == 0 else ["gateway", "floor"]
                for target in ["upstream", *order]:
                    run = run_target(name, target, rnd, up_port, conns, secs)
                    print(json.dumps(asdict(run)), file=sys.stderr)
                    runs.append(run)
        finally:
            upstream.terminate()
            upstream.wait(timeout=30)
    summary = summarise(runs)
    limiter = measure_limiter_memory()
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": machine(), "summary": summary, "limiter": limiter,
              "runs": [asdict(r) for r in runs]}  # fmt: skip
    (RESULTS / "results.json").write_text(json.dumps(report, indent=2))
    print(markdown(summary, limiter))
    chart(summary, RESULTS / "chart.png")


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


def markdown(summary: dict[str, Any], limiter: dict[str, float]) -> str:
    lines = [
        f"Machine: {machine()}",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def fmt(v: float | None, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for scenario, targets in summary.items():
        for target, s in targets.items():
            lines.append(
                f"| {scenario} | {target} | {fmt(s['rps'], '.0f')} | {fmt(s['p50_ms'], '.2f')} "
                f"| {fmt(s['p99_ms'], '.2f')} | {fmt(s['cpu_us_per_req'], '.0f')} "
                f"| {fmt(s['peak_rss_mib'], '.1f')} | {s['errors']:,.0f} |"
            )
    lines.append("")
    for scenario, t in summary.items():
        g, f, u = t.get("gateway", {}), t.get("floor", {}), t.get("upstream", {})
        failed = {name: s["errors"] for name, s in t.items() if s.get("errors")}
        if failed:  # errors (refusals, non-2xx) are fast: a ratio would flatter
            said = ", ".join(f"{name} {n:,.0f}" for name, n in failed.items())
            lines.append(f"- {scenario}: no ratios, runs with errors ({said})")
            continue
        if g.get("rps") and f.get("rps"):
            lines.append(f"- {scenario}: gateway/floor req/s = {g['rps'] / f['rps']:.3f}")
        if g.get("cpu_us_per_req") and f.get("cpu_us_per_req"):
            ratio = g["cpu_us_per_req"] / f["cpu_us_per_req"]
            lines.append(f"- {scenario}: gateway/floor CPU per request = {ratio:.3f}")
        if g.get("rps") and u.get("rps"):
            lines.append(f"- {scenario}: gateway/upstream req/s = {g['rps'] / u['rps']:.3f}")
    lines.append(
        f"- memory limiter: {limiter['bytes_per_client']:.0f} bytes per tracked client at "
        f"{limiter['clients']:,.0f} clients; bounded run kept {limiter['bounded_tracked']:,.0f} "
        f"keys for {limiter['bounded_clients']:,.0f} clients (max_tracked_keys "
        f"{limiter['bounded_max']:,.0f})"
    )
    return "\n".join(lines)


def chart(summary: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart)", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "rps", "req/s"), (axes[1], "p99_ms", "p99 ms")):
        names, values = [], []
        for scenario, targets in summary.items():
            for target, s in targets.items():
                names.append(f"{target}\n{scenario}")
                values.append(s[metric] or 0)
        ax.bar(names, values, color=["#999", "#4c72b0", "#dd8452"] * 2)
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"chart: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
