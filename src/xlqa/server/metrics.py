"""Prometheus metrics of one app (its own registry, so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Requests, latency, batch sizes and queue length, exposed at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "xlqa_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "xlqa_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_windows = Histogram(
            "xlqa_batch_windows", "windows per forward pass", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_questions = Histogram(
            "xlqa_batch_questions", "questions per forward pass", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "xlqa_batch_seconds",
            "time of one forward pass",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_windows = Gauge("xlqa_queue_windows", "windows waiting for a batch", registry=r)
        self.rejected = Counter("xlqa_rejected", "requests refused with 429 (queue full)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
