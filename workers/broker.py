"""The embedded broker: kombu's SQLAlchemy transport tuned for SQLite.

kombu hands every transport option to `create_engine`, so the settings that belong to
the transport itself (polling interval) are class attributes here, and SQLite gets WAL
and a busy timeout so that the web process, workers and beat can share one file.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as _SQLATransport
from sqlalchemy import event


class SQLiteTransport(_SQLATransport):
    polling_interval = 0.05

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        _patch_channel(self.Channel)


def _patch_channel(channel_cls: Any) -> None:
    if getattr(channel_cls, "_posbridge_patched", False):
        return
    original = channel_cls._engine_from_config

    def _engine_from_config(self: Any) -> Any:
        engine = original(self)
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        return engine

    channel_cls._engine_from_config = _engine_from_config
    channel_cls._posbridge_patched = True


def _patch_redis_reconnect() -> None:
    """Keep a worker alive when Redis goes away under it.

    On a lost connection Celery closes the broken one; closing a Redis channel restores
    unacked messages, which asks for a fresh client of a connection that is already gone
    (`conninfo` is None) and raises AttributeError. That is not one of the connection
    errors Celery ignores there, so the worker died ("Unrecoverable error") instead of
    reconnecting. Seen with kombu 5.7 on a Redis restart (the chaos suite's broker_restart).
    Answering with Redis's own ConnectionError lets Celery ignore it and reconnect; the
    database still holds every piece of work, and the sweeper re-sends it.
    """
    try:
        from kombu.transport import redis as kombu_redis
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # Redis support not installed: nothing to mend
        return
    channel_cls: Any = kombu_redis.Channel
    if getattr(channel_cls, "_posbridge_patched", False):
        return
    original = channel_cls._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return original(self, asynchronous=asynchronous)

    channel_cls._connparams = _connparams
    channel_cls._posbridge_patched = True


def install() -> None:
    TRANSPORT_ALIASES["sqla"] = "workers.broker:SQLiteTransport"
    _patch_redis_reconnect()
