"""The Celery app. Queues: `ingest`, `push.<system>` (one per target, so a slow POS cannot
starve the others), `poll` and `maintenance`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from celery import Celery
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from bridge.adapters import registry
from bridge.adapters.base import Capability
from bridge.config import Settings, get_settings
from workers import broker

broker.install()


P = ParamSpec("P")
R = TypeVar("R")


def queues_for(settings: Settings) -> list[str]:
    p = settings.queue_prefix
    return [f"{p}ingest", f"{p}poll", f"{p}maintenance", *(f"{p}push.{s}" for s in settings.systems)]


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Where each task goes when sent without an explicit queue (beat, Flower, retries)."""
    p = settings.queue_prefix
    maintenance = {"queue": f"{p}maintenance"}
    return {
        "posbridge.ingest": {"queue": f"{p}ingest"},
        "posbridge.poll": {"queue": f"{p}poll"},
        "posbridge.sweep": maintenance,
        "posbridge.prune_inbox": maintenance,
        "posbridge.upkeep": maintenance,
        "posbridge.retry_delivery": maintenance,
        "posbridge.retry_failed": maintenance,
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "sweep": {
            "task": "posbridge.sweep",
            "schedule": settings.sweep_interval_s,
            "options": {"queue": f"{settings.queue_prefix}maintenance"},
        },
        "upkeep": {
            "task": "posbridge.upkeep",
            "schedule": settings.upkeep_interval_s,
            "options": {"queue": f"{settings.queue_prefix}maintenance"},
        },
        "prune-inbox": {
            "task": "posbridge.prune_inbox",
            "schedule": 3600.0,
            "options": {"queue": f"{settings.queue_prefix}maintenance"},
        },
    }
    classes = registry.available(settings.extra_adapters)
    from bridge.config import load_adapter_settings

    for system in settings.systems:
        cls = classes.get(system)
        if cls is None:
            continue
        if Capability.POLLING in cls.capabilities or Capability.ORDERS in cls.capabilities:
            interval = load_adapter_settings(system, cls.settings_model).poll_interval_s
            schedule[f"poll-{system}"] = {
                "task": "posbridge.poll",
                "schedule": interval,
                "args": [system],
                "options": {"queue": f"{settings.queue_prefix}poll"},
            }
    return schedule


def configure(app: Celery, settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    broker = settings.broker
    transport_options: dict[str, Any] = {}
    if broker.startswith("sqla+"):
        from pathlib import Path

        from sqlalchemy.engine import make_url

        database = make_url(broker[len("sqla+") :]).database
        if database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        transport_options = {"connect_args": {"timeout": 30, "check_same_thread": False}}
    elif broker.startswith(("redis://", "rediss://")):
        # Longer than any countdown we ever set; long waits live in the database.
        transport_options = {"visibility_timeout": 3600}
    app.conf.update(
        broker_url=broker,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=f"{settings.queue_prefix}ingest",
        task_routes=task_routes(settings),
        posbridge_queue_prefix=settings.queue_prefix,
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.var_dir / "celerybeat-schedule"),
        timezone="UTC",
        enable_utc=True,
    )
    return app


def _setup_logging(**_kwargs: Any) -> None:
    """Workers log like the web: JSON lines, correlation ids, secrets redacted."""
    from bridge import logs
    from bridge.runtime import get_runtime

    settings = get_settings()
    try:
        secrets = logs.all_secrets(get_runtime())
    except Exception:  # incomplete config: the runtime will say so itself when used
        secrets = settings.secrets()
    logs.configure(settings.log_level, json_lines=settings.log_json, secrets=secrets)


setup_logging.connect(_setup_logging)


def _start_metrics_endpoint(**_kwargs: Any) -> None:
    """In the worker's main process: serve every child's metrics on one port."""
    import os

    port = os.environ.get("POSBRIDGE_WORKER_METRICS_PORT")
    if not port or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import start_http_server

    from bridge.metrics import multiprocess_registry

    start_http_server(
        int(port),
        addr=os.environ.get("POSBRIDGE_WORKER_METRICS_ADDR", "127.0.0.1"),
        registry=multiprocess_registry(),
    )


def _child_exit(pid: int | None = None, **_kwargs: Any) -> None:
    """A prefork child is going: log out of POS sessions, retire its metric files."""
    import os

    from bridge.runtime import set_runtime

    set_runtime(None)  # closes adapters (OnSite logs its session out)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


def _announce_ready(**_kwargs: Any) -> None:
    """Tell a supervising process that the worker consumes, without relying on log lines
    (whose level the operator chooses): write the file it named."""
    import os
    from pathlib import Path

    path = os.environ.get("POSBRIDGE_READY_FILE")
    if path:
        Path(path).write_text(str(os.getpid()))


worker_init.connect(_start_metrics_endpoint)
worker_ready.connect(_announce_ready)
worker_process_shutdown.connect(_child_exit)


def _after_fork(**_kwargs: Any) -> None:
    # Connections and HTTP pools must not be shared across the fork.
    from bridge.runtime import set_runtime
    from bridge.store.db import dispose_all

    dispose_all()
    set_runtime(None)


worker_process_init.connect(_after_fork)


def task(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`app.task` with a stable name, typed for mypy. Queues come from `task_routes`."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        return cast("Callable[P, R]", app.task(name=name)(fn))

    return register


def build_app(settings: Settings | None = None, *, tasks: bool = True) -> Celery:
    """A Celery app for these settings; `tasks=False` for one that only sends."""
    celery = Celery("posbridge", include=["workers.tasks"] if tasks else [])
    return configure(celery, settings)


app = build_app()
