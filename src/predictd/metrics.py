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

    def observe_prediction(self, prediction: Prediction) -> None:
        self.predictions.labels(prediction.model, prediction.status.value).inc()
