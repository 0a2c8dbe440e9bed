"""Prometheus metrics for web and workers.

Celery's prefork children are separate processes: when `PROMETHEUS_MULTIPROC_DIR` is set
(the worker command sets it under the var dir), every process writes its samples there
and `/metrics` aggregates them, so the figures are right under prefork.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

WEBHOOK_EVENTS = Counter(
    "posbridge_webhook_events_total",
    "Webhook events by system and outcome (accepted, duplicate, ignored, unknown_type, bad_signature, "
    "malformed, too_large)",
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
DELIVERIES = Gauge(
    "posbridge_deliveries", "Deliveries by target and state", ["target", "state"], multiprocess_mode="livemax"
)
POLL_LAG = Gauge(
    "posbridge_poll_lag_seconds",
    "Seconds since the last successful poll",
    ["system"],
    multiprocess_mode="livemax",
)


def render() -> tuple[bytes, str]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def sample(name: str, labels: dict[str, str]) -> float:
    """Read one sample of this process (the demo shows its own web process's counters)."""
    from prometheus_client import REGISTRY

    value: Any = REGISTRY.get_sample_value(name, labels)
    return float(value or 0.0)
