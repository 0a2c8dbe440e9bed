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


def install() -> None:
    TRANSPORT_ALIASES["sqla"] = "workers.broker:SQLiteTransport"
