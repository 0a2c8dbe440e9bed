"""/metrics on the web app and on a prefork worker: real processes, real counts."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack
from tests.harness import free_port, wait_for


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix="posbridge-metrics-"))
    metrics_dir = var / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    st = Stack(
        "sqlite",
        var,
        extra_env={
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "POSBRIDGE_WORKER_METRICS_PORT": str(port),
        },
    )
    st.worker_metrics = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    try:
        st.start_worker()
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v for (n, lb), v in found.items() if n == name and all((k, x) in lb for k, x in labels.items())
    )


def test_web_and_prefork_worker_metrics_count_the_real_work(stack: Stack) -> None:
    stack.reset()
    for n in range(3):
        stack.edit("mema", {"first_name": f"Metric{n}", "last_name": "Person", "email": f"m{n}@example.com"})
    stack.settle()
    web = samples(f"{stack.web.url}/metrics")
    assert total(web, "posbridge_webhook_events_total", system="mema", outcome="accepted") >= 3
    assert total(web, "posbridge_webhook_events_total", system="memb", outcome="accepted") >= 3  # echoes
    assert total(web, "posbridge_deliveries", target="memb", state="pending") == 0
    assert ("posbridge_target_paused", (("system", "memb"),)) in web
    # The worker has two prefork children; its endpoint adds up what every child did.
    worker_url = stack.worker_metrics  # type: ignore[attr-defined]
    worker = wait_for(lambda: samples(worker_url), timeout=20, what="the worker's metrics endpoint")
    assert total(worker, "posbridge_push_seconds_count", target="memb", outcome="done") == 3
    assert total(worker, "posbridge_ingest_seconds_count", system="mema", outcome="created") == 3
    assert total(worker, "posbridge_echoes_suppressed_total", system="memb") == 3
