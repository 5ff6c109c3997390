"""What `make bench` and `bench.agent_bench` report, without the minutes of measuring.

The gateway once "beat" its own upstream: its policy left max_connections_per_client at 64
for wrk's one address, most connections got fast 503s, and the summary had no error column.
"""

from __future__ import annotations

import subprocess
import sys

from bench.__main__ import POLICY, markdown
from bench.common import TOKEN_ROUTE
from gateway.policy import parse_policy
from tests.support.processes import ROOT

LIMITER = {"bytes_per_client": 200.0, "clients": 1e5, "bounded_tracked": 1e4,
           "bounded_clients": 1e5, "bounded_max": 1e4}  # fmt: skip


def target(rps: float, errors: float) -> dict[str, float | None]:
    return {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_us_per_req": 100.0,
            "peak_rss_mib": 50.0, "errors": errors}  # fmt: skip


def test_the_bench_policy_admits_all_of_wrks_connections_from_one_address() -> None:
    policy = parse_policy(POLICY.format(port=8080, upstream=9000, routes=TOKEN_ROUTE), env={})
    assert policy.server.max_connections_per_client >= 256  # the 100ms/256c scenario


def test_summary_has_an_error_column_and_no_ratio_for_a_run_with_errors() -> None:
    summary = {
        "0ms/64c": {"upstream": target(9000, 0), "floor": target(5000, 0),
                    "gateway": target(4000, 0)},
        "100ms/256c": {"upstream": target(2500, 0), "floor": target(2400, 0),
                       "gateway": target(8807, 105488)},
    }  # fmt: skip
    text = markdown(summary, LIMITER)
    assert "| errors |" in text
    assert "| 100ms/256c | gateway | 8807 | 1.00 | 2.00 | 100 | 50.0 | 105,488 |" in text
    assert "| 0ms/64c | gateway | 4000 | 1.00 | 2.00 | 100 | 50.0 | 0 |" in text
    assert "- 0ms/64c: gateway/floor req/s = 0.800" in text
    assert "- 100ms/256c: no ratios, runs with errors (gateway 105,488)" in text
    assert "100ms/256c: gateway/" not in text


def test_agent_bench_says_what_to_install_before_starting_anything() -> None:
    """Without FastAPI (the sample stack's), it stops at once and names the extra."""
    hide = (
        "import runpy, sys; sys.modules['fastapi'] = None; sys.argv = ['agent_bench', '--quick'];"
        " runpy.run_module('bench.agent_bench', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bench.agent_bench: fastapi not installed" in done.stderr, done.stderr
    assert "pip install -e '.[dev]'" in done.stderr
    assert "did not come up" not in done.stderr
    assert done.stdout == ""
