"""The migrations build exactly the schema the models describe, on SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from bridge.store.migrate import upgrade
from bridge.store.models import Base
from tests.harness import create_pg_database, drop_pg_database, service_or_skip


def _drift(url: str) -> list[object]:
    upgrade(url)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    assert _drift(f"sqlite:///{tmp_path}/schema.sqlite") == []


@pytest.mark.services
def test_postgres_schema_matches_the_models() -> None:
    service_or_skip("Postgres", "127.0.0.1", 5432)
    url = create_pg_database()
    try:
        assert _drift(url) == []
    finally:
        drop_pg_database(url)
