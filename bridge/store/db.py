"""Engines and sessions for SQLite (the embedded default) and Postgres."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
# A pooled Postgres connection idle this long is pinged before use.
PING_AFTER_IDLE_S = 10.0


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use psycopg 3 for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def build_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so that every transaction is
            # BEGIN IMMEDIATE: writers queue on the lock instead of failing on upgrade.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: an accepted webhook survives power loss, not only a process crash.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)

    # Not `pool_pre_ping`: it costs a round trip per checkout, and a task opens several
    # sessions (it was one statement in eight of a backfill). A connection that sat idle
    # (where a server restart or an idle timeout would have cut it) is pinged; a busy one
    # that breaks fails its statement, SQLAlchemy then drops the whole pool, and the
    # sweeper sends the work again as after any failed task.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            _ping(dbapi_conn)
        except Exception as err:
            # The pool discards this connection and checks out a fresh one.
            raise exc.DisconnectionError(f"pooled connection is dead: {err}") from err

    return engine


def _ping(dbapi_conn: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("SELECT 1")
    cursor.close()
    dbapi_conn.rollback()


def get_engine(url: str) -> Engine:
    url = normalize_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = build_engine(url)
        return engine


def dispose_all() -> None:
    """After fork (Celery prefork) and in tests: drop pooled connections."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = get_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any exception."""
        with self.sessions() as session, session.begin():
            yield session

    def upgrade(self) -> None:
        from bridge.store.migrate import upgrade

        upgrade(self.url)
