"""Sending tasks. Every task takes ids or a system name only, so that an operator can
re-apply any of them from Flower, and the database row is always the real state."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime

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

    def mark(self, queue: str, sent_at: datetime) -> None:
        """A marker down `queue` (`ingest`, `push.<system>`): see engine.sweep."""
        self.app.send_task("posbridge.mark", args=[queue, sent_at.isoformat()], queue=f"{self.prefix}{queue}")

    def waiting(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each of `queues` (`ingest`, `push.<system>`), where the broker says.

        A queue missing from the answer is one the broker could not count (or that does not
        exist yet, which Redis reports for an empty queue): the caller treats it as empty.
        """
        counts: dict[str, int] = {}
        try:
            with self.app.connection_for_read() as conn:
                for queue in queues:
                    channel = conn.channel()
                    try:
                        declared = channel.queue_declare(queue=f"{self.prefix}{queue}", passive=True)
                        counts[queue] = int(declared.message_count)
                    except Exception as err:  # a queue not there yet holds nothing
                        log.debug("queue %s not counted: %s", queue, err)
                    finally:
                        with contextlib.suppress(Exception):
                            channel.close()
        except Exception as err:  # the sweeper then re-sends as before
            log.info("broker queue depths unavailable: %s", err)
        return counts
