"""Prometheus metrics, one registry per app so that several apps in one process never collide."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.domain import Prediction

HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


class HttpMetrics(Collector):
    """``predictd_http_requests_total`` and ``predictd_http_request_duration_seconds``, kept as plain
    numbers and turned into metric families only when scraped.

    Every request adds to them, on the event loop's thread; prometheus_client's own Counter and Histogram
    take a lock for each of the three updates (4.3 us a request, against about 1 us here). A scrape reads
    them on the same thread, or (a worker's metrics server) copies each table in one C-level step under
    the GIL before reading it.
    """

    def __init__(self, buckets_s: Sequence[float]) -> None:
        self._bounds = tuple(sorted(buckets_s))
        self._requests: dict[tuple[str, str, int], int] = {}
        # route -> [requests per bucket (the last one +Inf)..., sum of seconds]
        self._durations: dict[str, list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        row = self._durations.get(route)
        if row is None:
            row = self._durations[route] = [0.0] * (len(self._bounds) + 2)
        row[bisect_left(self._bounds, seconds)] += 1  # the first bucket whose bound is >= seconds (le)
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "predictd_http_requests", "HTTP requests answered.", labels=["method", "route", "status"]
        )
        for (method, route, status), count in list(self._requests.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        durations = HistogramMetricFamily(
            "predictd_http_request_duration_seconds", "Time to answer an HTTP request.", labels=["route"]
        )
        bounds = [str(float(b)) for b in self._bounds] + ["+Inf"]  # as prometheus_client writes them
        for route, row in list(self._durations.items()):
            cumulative = list(itertools.accumulate(row[:-1]))
            durations.add_metric([route], list(zip(bounds, cumulative, strict=True)), sum_value=row[-1])
        yield durations


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(HTTP_BUCKETS_S)
        self.registry.register(self.http)
        self.predictions = Counter(
            "predictd_predictions_total",
            "Predictions reaching each state.",
            ["model", "status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "predictd_queue_depth", "Predictions waiting for a worker.", ["model"], registry=self.registry
        )
        self.model_available = Gauge(
            "predictd_model_available",
            "1 when a worker can run the model.",
            ["model"],
            registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "predictd_cache_bytes",
            "What each in-process cache of predictions holds, in bytes (bounded by [cache] max_bytes).",
            ["cache"],
            registry=self.registry,
        )

        # Labelled children, looked up once per label set (labels() takes a lock and builds tuples).
        self._prediction_counters: dict[tuple[str, str], Counter] = {}

    def watch_cache(self, name: str, held_bytes: Callable[[], int]) -> None:
        """Report ``held_bytes()`` as cache ``name``'s size at each scrape."""
        self.cache_bytes.labels(name).set_function(lambda: float(held_bytes()))

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        self.http.observe(method, route, status, seconds)

    def observe_prediction(self, prediction: Prediction) -> None:
        key = (prediction.model, prediction.status.value)
        counter = self._prediction_counters.get(key)
        if counter is None:
            counter = self._prediction_counters[key] = self.predictions.labels(*key)
        counter.inc()
