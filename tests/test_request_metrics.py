"""The lock-free request metrics expose exactly what prometheus_client's own types would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.request_metrics import (
    CounterTable,
    GaugeValue,
    HistogramTable,
    RequestMetricsCollector,
)

BOUNDS = (0.005, 0.01, 0.1, 1.0, 10.0)
# On a bound (le is inclusive), between bounds, below the first, above the last.
SAMPLES = [0.0, 0.005, 0.0050001, 0.01, 0.05, 0.1, 1.0, 2.5, 10.0, 10.5, 99.0]


def exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return sorted(line for line in lines if "_created" not in line)


def test_histogram_counter_and_gauge_render_like_the_library() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hist = HistogramTable("t_seconds", "Doc.", "route", BOUNDS)
    count = CounterTable("t_answers_total", "Doc.", ["route", "status"])
    gauge = GaugeValue("t_in_flight", "Doc.")
    ours.register(RequestMetricsCollector(hist, count, gauge))
    lib_hist = Histogram("t_seconds", "Doc.", ["route"], buckets=BOUNDS, registry=theirs)
    lib_count = Counter("t_answers", "Doc.", ["route", "status"], registry=theirs)
    lib_gauge = Gauge("t_in_flight", "Doc.", registry=theirs)

    for route in ("site", "voice"):
        for value in SAMPLES:
            hist.observe(route, value)
            lib_hist.labels(route).observe(value)
    for key in [("site", "200"), ("site", "200"), ("site", "429"), ("voice", "502")]:
        count.inc(key)
        lib_count.labels(*key).inc()
    gauge.inc()
    gauge.inc()
    gauge.dec()
    lib_gauge.inc(1)

    assert exposition(ours) == exposition(theirs)
    assert count.get(("site", "200")) == 2.0
    assert count.get(("nobody", "200")) == 0.0


def test_inclusive_bounds_put_a_sample_on_a_bound_in_that_bucket() -> None:
    registry = CollectorRegistry()
    hist = HistogramTable("h", "Doc.", "route", BOUNDS)
    registry.register(RequestMetricsCollector(hist))
    hist.observe("r", 0.1)
    text = generate_latest(registry).decode()
    assert 'h_bucket{le="0.01",route="r"} 0.0' in text
    assert 'h_bucket{le="0.1",route="r"} 1.0' in text
    assert 'h_bucket{le="+Inf",route="r"} 1.0' in text
    assert 'h_sum{route="r"} 0.1' in text
