"""Prometheus metrics for web and workers.

The web app serves `/metrics`. Celery's prefork children are separate processes, so a
worker started by `posbridge worker` gets `PROMETHEUS_MULTIPROC_DIR` (set before Python
starts) and, with `POSBRIDGE_WORKER_METRICS_PORT`, serves the aggregate of all its
children on that port. Figures whose truth is the database are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

WEBHOOK_EVENTS = Counter(
    "posbridge_webhook_events_total",
    "Webhook events by system and outcome (accepted, duplicate, ignored, unknown_type, bad_signature, "
    "malformed, too_large, replayed, parse_error)",
    ["system", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "posbridge_signature_failures_total", "Webhooks refused for their signature", ["system"]
)
INGEST_SECONDS = Histogram(
    "posbridge_ingest_seconds",
    "Time to ingest one inbox event",
    ["system", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUSH_SECONDS = Histogram(
    "posbridge_push_seconds",
    "Time of one push attempt",
    ["target", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = Counter("posbridge_retries_total", "Push attempts that will be retried", ["target"])
ECHOES = Counter(
    "posbridge_echoes_suppressed_total", "Events recognised as the bridge's own writes", ["system"]
)


class DatabaseCollector:
    """Figures whose truth is the database, read at scrape time (right under any number of
    processes): deliveries by target and state, pending inbox, poll lag, paused targets."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from bridge.ops.status import system_status

        rows = system_status(self.rt)
        deliveries = GaugeMetricFamily(
            "posbridge_deliveries", "Deliveries waiting or failed", labels=["target", "state"]
        )
        inbox = GaugeMetricFamily(
            "posbridge_inbox_pending", "Inbox events not yet ingested", labels=["system"]
        )
        lag = GaugeMetricFamily(
            "posbridge_poll_lag_seconds", "Seconds since the last successful poll", labels=["system"]
        )
        paused = GaugeMetricFamily(
            "posbridge_target_paused", "1 while a target is paused by an auth failure", labels=["system"]
        )
        for row in rows:
            deliveries.add_metric([row["system"], "pending"], row["pending"])
            deliveries.add_metric([row["system"], "failed"], row["failed"])
            inbox.add_metric([row["system"]], row["inbox_pending"])
            if row["poll_lag_s"] is not None:
                lag.add_metric([row["system"]], row["poll_lag_s"])
            paused.add_metric([row["system"]], 1.0 if row["paused"] else 0.0)
        yield from (deliveries, inbox, lag, paused)


def render(rt: Any | None = None) -> tuple[bytes, str]:
    """This process's metrics, plus the database-backed ones when given a runtime."""
    body = generate_latest()
    if rt is not None:
        registry = CollectorRegistry()
        registry.register(DatabaseCollector(rt))
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


def multiprocess_registry() -> CollectorRegistry:
    """Every prefork child's samples, from PROMETHEUS_MULTIPROC_DIR (for the worker endpoint)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def sample(name: str, labels: dict[str, str]) -> float:
    """Read one sample of this process (the demo shows its own web process's counters)."""
    from prometheus_client import REGISTRY

    value: Any = REGISTRY.get_sample_value(name, labels)
    return float(value or 0.0)
