"""The baseline for the pipeline benchmark: bare Celery, a no-op task counted in Redis."""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:noop")

app = Celery("bench_noop", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
_client: redis.Redis | None = None


@app.task(name="bench.noop")  # type: ignore[misc]
def noop(i: int) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    _client.incr(COUNTER)
