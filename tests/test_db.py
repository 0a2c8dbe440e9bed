"""The Postgres pool: no ping per checkout, yet a connection the server dropped is not used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from bridge.store import db
from tests.harness import create_pg_database, drop_pg_database, service_or_skip


@pytest.fixture
def pg() -> Iterator[db.Database]:
    service_or_skip("Postgres", "127.0.0.1", 5432)
    url = create_pg_database()
    try:
        yield db.Database(url)
    finally:
        drop_pg_database(url)


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the real ping's calls (it still runs)."""
    calls: list[int] = []
    real = db._ping

    def counted(dbapi_conn: object) -> None:
        calls.append(1)
        real(dbapi_conn)

    monkeypatch.setattr(db, "_ping", counted)
    return calls


def _backend_pid(database: db.Database) -> int:
    with database.session() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(database: db.Database, pid: int) -> None:
    # From a connection of its own, outside the pool under test.
    other = db.build_engine(database.url)
    try:
        with other.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.commit()
    finally:
        other.dispose()


def test_a_busy_connection_is_not_pinged(
    pg: db.Database, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 60.0)
    pids = {_backend_pid(pg) for _ in range(5)}
    assert pings == []
    assert len(pids) == 1
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    pids |= {_backend_pid(pg) for _ in range(5)}
    assert len(pings) == 5
    assert len(pids) == 1


def test_an_idle_connection_the_server_dropped_is_replaced(
    pg: db.Database, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    first = _backend_pid(pg)
    _kill(pg, first)
    # The pooled connection is dead; checkout pings it (idle longer than 0 s), the ping
    # fails and the pool connects afresh: the session works on a new backend.
    second = _backend_pid(pg)
    assert second != first
    assert pings


def test_without_the_idle_ping_a_dropped_connection_fails_once(
    pg: db.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other side of the trade, so that the test above proves the ping does the work.
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    first = _backend_pid(pg)
    _kill(pg, first)
    with pytest.raises(Exception, match=r"terminat|closed|connection"):
        _backend_pid(pg)
    # SQLAlchemy dropped the pool on the disconnect: the next unit of work reconnects.
    assert _backend_pid(pg) != first
