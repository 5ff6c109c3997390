"""The metrics every request updates, as a scrape shows them: plain numbers rendered through
prometheus-client's own metric families on the app's registry, `_created` samples included."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

P = "chatkit_gateway_"
# On a bound (le is inclusive), between bounds, below the first, above the last.
DURATIONS = [0.0, 0.005, 0.0050001, 0.01, 0.05, 0.1, 1.0, 2.5, 10.0, 10.5, 99.0]


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, keyed by name and sorted labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(P)
    }


def test_answers_upstream_calls_and_in_flight_as_a_scrape_shows_them() -> None:
    metrics = Metrics()
    before = time.time()
    for seconds in DURATIONS:
        metrics.answered("site", 200, seconds)
    metrics.answered("site", 429, 0.02)
    metrics.answered("voice", 200, 0.3)
    metrics.upstream_call("site", "ok", 0.2)
    metrics.upstream_call("site", "ok", 0.7)
    metrics.upstream_call("site", "timeout", 10.0)
    metrics.per_request.in_flight += 1
    metrics.per_request.in_flight += 1
    metrics.per_request.in_flight -= 1
    after = time.time()
    got = scrape(metrics)

    def value(name: str, **labels: str) -> float:
        return got.pop((P + name, tuple(sorted(labels.items()))))

    assert value("requests_total", route="site", status="200") == len(DURATIONS)
    assert value("requests_total", route="site", status="429") == 1
    assert value("requests_total", route="voice", status="200") == 1
    assert value("upstream_requests_total", route="site", outcome="ok") == 2
    assert value("upstream_requests_total", route="site", outcome="timeout") == 1
    assert value("in_flight_requests") == 1
    site = [*DURATIONS, 0.02]
    bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0"]
    bounds += ["10.0", "30.0", "60.0"]
    for le in bounds:
        expected = sum(1 for d in site if d <= float(le))
        assert value("request_duration_seconds_bucket", route="site", le=le) == expected, le
        assert value("request_duration_seconds_bucket", route="voice", le=le) == (
            1 if float(le) >= 0.3 else 0
        )
        assert value("upstream_duration_seconds_bucket", route="site", le=le) == sum(
            1 for d in (0.2, 0.7, 10.0) if d <= float(le)
        )
    assert value("request_duration_seconds_bucket", route="site", le="+Inf") == len(site)
    assert value("request_duration_seconds_count", route="site") == len(site)
    assert value("request_duration_seconds_sum", route="site") == sum(site)
    assert value("request_duration_seconds_bucket", route="voice", le="+Inf") == 1
    assert value("request_duration_seconds_count", route="voice") == 1
    assert value("request_duration_seconds_sum", route="voice") == 0.3
    assert value("upstream_duration_seconds_bucket", route="site", le="+Inf") == 3
    assert value("upstream_duration_seconds_count", route="site") == 3
    assert value("upstream_duration_seconds_sum", route="site") == 0.2 + 0.7 + 10.0
    # Each labelled series has its `_created` sample: when its first value arrived.
    created = [
        ("requests_created", {"route": "site", "status": "200"}),
        ("requests_created", {"route": "site", "status": "429"}),
        ("requests_created", {"route": "voice", "status": "200"}),
        ("request_duration_seconds_created", {"route": "site"}),
        ("request_duration_seconds_created", {"route": "voice"}),
        ("upstream_requests_created", {"route": "site", "outcome": "ok"}),
        ("upstream_requests_created", {"route": "site", "outcome": "timeout"}),
        ("upstream_duration_seconds_created", {"route": "site"}),
    ]
    for name, labels in created:
        assert before - 1 <= value(name, **labels) <= after + 1, name
    # Nothing else: no series for what was not observed (first-byte times come from the
    # proxy route only).
    per_request = ("request", "upstream_requests", "upstream_duration", "upstream_first_byte")
    assert not [k for k in got if k[0].removeprefix(P).startswith((*per_request, "in_flight"))]


def test_a_duration_on_a_bound_is_counted_in_that_bucket() -> None:
    metrics = Metrics()
    metrics.answered("r", 200, 0.1)
    text = generate_latest(metrics.registry).decode()
    assert P + 'request_duration_seconds_bucket{le="0.05",route="r"} 0.0' in text
    assert P + 'request_duration_seconds_bucket{le="0.1",route="r"} 1.0' in text
    assert P + 'request_duration_seconds_bucket{le="+Inf",route="r"} 1.0' in text
    assert P + 'request_duration_seconds_sum{route="r"} 0.1' in text
    assert P + 'requests_total{route="r",status="200"} 1.0' in text
