"""Prometheus metrics: what a platform team graphs and alerts on.

A registry of our own (no process-global state), served on `metrics_port` only when
`enable_monitoring` is true.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "splitlearn_reconciles_total",
            "SplitModel reconciliations, by result",
            ["result"],
            registry=self.registry,
        )
        self.jobs_running = Gauge(
            "splitlearn_jobs_running", "Split Jobs running now", registry=self.registry
        )
        self.models_queued = Gauge(
            "splitlearn_models_queued",
            "SplitModels waiting for a free slot (max_models)",
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "splitlearn_job_duration_seconds",
            "Wall time of finished split Jobs, from start to completion",
            ["result"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200, 21600),
            registry=self.registry,
        )
        self.failures = Counter(
            "splitlearn_failures_total",
            "SplitModels that failed, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.bytes_written = Counter(
            "splitlearn_component_bytes_written_total",
            "Bytes of component weights written, by component",
            ["component"],
            registry=self.registry,
        )
        self.serving_ready = Gauge(
            "splitlearn_serving_ready_replicas",
            "Trunk server pods ready, by SplitModel (spec.serving)",
            ["namespace", "splitmodel"],
            registry=self.registry,
        )
        self._queued: set[tuple[str, str]] = set()
        self.count_running: Callable[[], int] = lambda: 0  # set to read the Jobs index
        self.jobs_running.set_function(lambda: self.count_running())

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def set_queued(self, key: tuple[str, str], queued: bool) -> None:
        (self._queued.add if queued else self._queued.discard)(key)
        self.models_queued.set(len(self._queued))

    def forget_server(self, namespace: str, splitmodel: str) -> None:
        """A server removed: its series goes too (not a stale 0 forever)."""
        with contextlib.suppress(KeyError):
            self.serving_ready.remove(namespace, splitmodel)
