"""Prometheus metrics, one registry per app so that several apps in one process never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .domain import Prediction


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "predictd_http_requests_total",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "predictd_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=self.registry,
        )
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

        # Labelled children, looked up once per label set (labels() takes a lock and builds tuples).
        self._http_counters: dict[tuple[str, str, int], Counter] = {}
        self._http_timers: dict[str, Histogram] = {}
        self._prediction_counters: dict[tuple[str, str], Counter] = {}

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        counter = self._http_counters.get((method, route, status))
        if counter is None:
            counter = self.http_requests.labels(method, route, str(status))
            self._http_counters[(method, route, status)] = counter
        counter.inc()
        timer = self._http_timers.get(route)
        if timer is None:
            timer = self._http_timers[route] = self.http_seconds.labels(route)
        timer.observe(seconds)

    def observe_prediction(self, prediction: Prediction) -> None:
        key = (prediction.model, prediction.status.value)
        counter = self._prediction_counters.get(key)
        if counter is None:
            counter = self._prediction_counters[key] = self.predictions.labels(*key)
        counter.inc()
