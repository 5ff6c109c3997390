"""The metrics every request updates: plain numbers, exported by a custom collector.

prometheus-client's Counter and Histogram take a lock and a chain of method calls per
update; a token request's eight updates cost about 40,000 instructions, 4 % of it
(docs/BENCHMARKS.md). Only the event loop's thread updates these series, so plain numbers
do, and `collect()` renders them through the library's public custom-collector API
(`prometheus_client.core`): the same names, buckets and `_created` samples as its own types.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

PREFIX = "chatkit_gateway_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LE = (*map(floatToGoString, LATENCY_BUCKETS), "+Inf")
# The library's own switch for `_created` samples, read as it reads it.
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true", "1", "t",
)  # fmt: skip


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()


class _Timings:
    """One histogram series: per-bucket counts (not cumulative), their sum, its birth."""

    __slots__ = ("buckets", "created", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(_LE)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # `le` is inclusive
        self.sum += seconds


class RequestMetrics(Collector):
    """Answers by route and status, their time by route, upstream calls by route and
    outcome, their time by route, and the requests in flight."""

    __slots__ = ("_answers", "_durations", "_upstream", "_upstream_durations", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        # A series is born at its first value, as a labelled child of the library's is.
        self._answers: defaultdict[tuple[str, int], _Count] = defaultdict(_Count)
        self._durations: defaultdict[str, _Timings] = defaultdict(_Timings)
        self._upstream: defaultdict[tuple[str, str], _Count] = defaultdict(_Count)
        self._upstream_durations: defaultdict[str, _Timings] = defaultdict(_Timings)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self._answers[route, status].value += 1
        self._durations[route].observe(seconds)

    def upstream_call(self, route: str, outcome: str, seconds: float | None) -> None:
        """One upstream call; `seconds` None when it took no time worth a sample (the stub)."""
        self._upstream[route, outcome].value += 1
        if seconds is not None:
            self._upstream_durations[route].observe(seconds)

    def collect(self) -> Iterator[Metric]:
        yield _counter("requests", "HTTP answers by route and status.", ("route", "status"),
                       {(r, str(s)): c for (r, s), c in list(self._answers.items())})  # fmt: skip
        yield _histogram("request_duration_seconds", "Time to answer, by route.", self._durations)
        yield _counter("upstream_requests", "Upstream calls by route and outcome.",
                       ("route", "outcome"), self._upstream)  # fmt: skip
        yield _histogram(
            "upstream_duration_seconds", "Upstream call time (to the last byte).",
            self._upstream_durations,
        )  # fmt: skip
        gauge = Metric(PREFIX + "in_flight_requests", "Requests being answered now.", "gauge")
        gauge.add_sample(PREFIX + "in_flight_requests", {}, float(self.in_flight))
        yield gauge


def _counter(
    name: str, doc: str, labels: tuple[str, str], series: Mapping[tuple[str, str], _Count]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for values, count in list(series.items()):
        family.add_metric(values, count.value, created=count.created if _CREATED else None)
    return family


def _histogram(name: str, doc: str, series: Mapping[str, _Timings]) -> Metric:
    name = PREFIX + name
    family = Metric(name, doc, "histogram")
    for route, timings in list(series.items()):
        total = 0
        for le, count in zip(_LE, timings.buckets, strict=True):
            total += count
            family.add_sample(name + "_bucket", {"route": route, "le": le}, float(total))
        family.add_sample(name + "_count", {"route": route}, float(total))
        family.add_sample(name + "_sum", {"route": route}, timings.sum)
        if _CREATED:
            family.add_sample(name + "_created", {"route": route}, timings.created)
    return family
