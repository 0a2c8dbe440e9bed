"""Sending tasks. Every task takes ids or a system name only, so that an operator can
re-apply any of them from Flower, and the database row is always the real state."""

from __future__ import annotations

import logging

from celery import Celery

log = logging.getLogger("posbridge.dispatch")


class CeleryDispatcher:
    def __init__(self, celery: Celery | None = None) -> None:
        if celery is None:
            from workers.app import app as default_app

            celery = default_app
        self.app: Celery = celery
        self.prefix = str(celery.conf.get("posbridge_queue_prefix") or "")

    def ingest(self, inbox_ids: list[int], countdown: float = 0.0) -> None:
        if inbox_ids:
            self.app.send_task(
                "posbridge.ingest",
                args=[list(inbox_ids)],
                queue=f"{self.prefix}ingest",
                countdown=countdown if countdown > 0 else None,
            )

    def push(self, target: str, delivery_id: int, countdown: float = 0.0) -> None:
        self.app.send_task(
            "posbridge.push",
            args=[delivery_id],
            queue=f"{self.prefix}push.{target}",
            countdown=countdown if countdown > 0 else None,
        )

    def poll(self, system: str) -> None:
        self.app.send_task("posbridge.poll", args=[system], queue=f"{self.prefix}poll")
