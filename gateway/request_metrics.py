"""Counters and histograms updated on every request, kept as plain numbers.

prometheus_client's Counter and Histogram take a lock on every update, and a histogram
also searches its buckets in Python; one request updates about eight such values. Here
the event loop is the only writer and the scrape (an aiohttp handler on the same loop)
the only reader, so a dict of numbers needs no lock, and a histogram observation is one
C bisect. `RequestMetricsCollector` renders them as ordinary metric families on the
app's own registry, so the exposition is the same as the library's own types would give.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString


class CounterTable:
    """A labelled counter: label values (as a tuple) → count."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def get(self, key: tuple[str, ...]) -> float:
        return self.values.get(key, 0.0)

    def family(self) -> Metric:
        out = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in list(self.values.items()):
            out.add_metric(list(key), value)
        return out


class HistogramTable:
    """A histogram labelled by one value: per label, a count per bucket and the sum.

    A row is `[n(≤b0), n(b0<v≤b1), …, n(v>b_last), sum]`; `le` is inclusive, hence
    bisect_left. Counts are made cumulative only when scraped.
    """

    __slots__ = ("_bounds", "_les", "doc", "label", "name", "rows")

    def __init__(self, name: str, doc: str, label: str, bounds: Sequence[float]) -> None:
        self.name, self.doc, self.label = name, doc, label
        self._bounds = tuple(sorted(bounds))
        self._les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.rows: dict[str, list[float]] = {}

    def observe(self, label: str, value: float) -> None:
        row = self.rows.get(label)
        if row is None:
            row = self.rows[label] = [0.0] * (len(self._bounds) + 2)
        row[bisect_left(self._bounds, value)] += 1
        row[-1] += value

    def family(self) -> Metric:
        out = HistogramMetricFamily(self.name, self.doc, labels=(self.label,))
        for label, row in list(self.rows.items()):
            running = 0.0
            buckets = []
            for le, count in zip(self._les, row, strict=False):
                running += count
                buckets.append((le, running))
            out.add_metric([label], buckets, sum_value=row[-1])
        return out


class GaugeValue:
    """An unlabelled gauge."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc, self.value = name, doc, 0.0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def family(self) -> Metric:
        out = GaugeMetricFamily(self.name, self.doc)
        out.add_metric([], self.value)
        return out


class RequestMetricsCollector:
    """Registered on a CollectorRegistry: scrapes render every table given."""

    def __init__(self, *tables: CounterTable | HistogramTable | GaugeValue) -> None:
        self._tables = tables

    def collect(self) -> Iterator[Metric]:
        for table in self._tables:
            yield table.family()
