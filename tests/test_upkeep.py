"""Upkeep: the bridge keeps its own planner statistics and dead rows in check on Postgres.

This machine's Postgres runs with autovacuum off; so may a retailer's. The tables under
test also have it off per table, so that the figures here do not depend on the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, text, update

from bridge.canonical import utcnow
from bridge.store import upkeep
from bridge.store.db import Database
from bridge.store.migrate import upgrade
from bridge.store.models import Customer, Delivery
from tests.conftest import Stack
from tests.harness import create_pg_database, drop_pg_database, service_or_skip, wait_for, waiting_among_done

TABLES = ("customers", "deliveries")
CUSTOMERS = 2000


@pytest.fixture
def pg() -> Iterator[Database]:
    service_or_skip("Postgres", "127.0.0.1", 5432)
    url = create_pg_database()
    try:
        upgrade(url)
        db = Database(url)
        with db.engine.connect() as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
            conn.commit()
        yield db
    finally:
        drop_pg_database(url)


def fill(db: Database, customers: int = CUSTOMERS) -> list[str]:
    """A store grown from empty, as a backfill grows it: one waiting delivery per customer
    and target among done ones."""
    now = utcnow()
    ids = [str(uuid.uuid4()) for _ in range(customers)]
    with db.session() as session:
        session.execute(insert(Customer), [{"id": cid, "fields": {}} for cid in ids])
        session.execute(insert(Delivery), waiting_among_done(ids, ("square", "loyverse", "onsite"), now))
        if not db.is_sqlite:
            flush_stats(session.connection())
    return ids


def flush_stats(conn: Any) -> None:
    # A backend reports its row counts to the statistics at most once a second; this one
    # reports at its commit, so the next look sees them.
    conn.execute(text("SELECT pg_stat_force_next_flush()"))


def stats(db: Database) -> dict[str, dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, last_analyze, last_autoanalyze, n_mod_since_analyze, n_dead_tup,"
                " vacuum_count FROM pg_stat_user_tables WHERE relname = ANY(:t)"
            ),
            {"t": list(TABLES)},
        ).mappings()
        return {r["relname"]: dict(r) for r in rows}


def generic_plan_of_waiting_lookup(db: Database, customer_id: str) -> str:
    """The ensure_delivery lookup as a prepared statement's generic plan."""
    with db.engine.connect() as conn:
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(
            "PREPARE waiting(varchar, varchar, varchar) AS SELECT id FROM deliveries"
            " WHERE customer_id = $1 AND target = $2 AND state = $3"
        )
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE waiting('{customer_id}', 'square', 'pending')").all()
    return "\n".join(r[0] for r in rows)


def test_a_table_grown_from_empty_is_analyzed_and_its_lookups_plan_by_customer(pg: Database) -> None:
    ids = fill(pg)
    before = stats(pg)
    assert before["deliveries"]["last_analyze"] is None
    assert before["deliveries"]["n_mod_since_analyze"] == 9 * CUSTOMERS
    report = upkeep.run(pg)
    assert set(TABLES) <= set(report.analyzed)
    assert report.vacuumed == []  # inserts leave no dead rows
    after = stats(pg)
    assert after["deliveries"]["last_analyze"] is not None
    assert after["deliveries"]["n_mod_since_analyze"] == 0
    plan = generic_plan_of_waiting_lookup(pg, ids[0])
    assert "customer_id" in next(line for line in plan.splitlines() if "Index Cond" in line), plan


def test_nothing_is_analyzed_again_below_the_threshold(pg: Database) -> None:
    ids = fill(pg)
    upkeep.run(pg)
    # 10 % of the rows plus 50, as autovacuum counts: a few changes do not call for it.
    with pg.session() as session:
        session.execute(update(Delivery).where(Delivery.customer_id.in_(ids[:10])).values(attempts=1))
        flush_stats(session.connection())
    report = upkeep.run(pg)
    assert "deliveries" not in report.analyzed
    assert stats(pg)["deliveries"]["n_mod_since_analyze"] == 90


def test_dead_rows_are_vacuumed_where_autovacuum_is_off(pg: Database) -> None:
    fill(pg)
    upkeep.run(pg)
    for _ in range(2):  # pending → in flight → done, as every delivery goes
        with pg.session() as session:
            session.execute(update(Delivery).values(attempts=Delivery.attempts + 1))
            flush_stats(session.connection())
    assert stats(pg)["deliveries"]["n_dead_tup"] >= 9 * CUSTOMERS
    report = upkeep.run(pg)
    assert "deliveries" in report.vacuumed
    after = stats(pg)["deliveries"]
    assert after["n_dead_tup"] == 0
    assert after["vacuum_count"] == 1


def test_where_autovacuum_runs_vacuum_is_left_to_it() -> None:
    analyze, vacuum = upkeep.due(mods=0, dead=10_000, reltuples=1000.0, autovacuum=True)
    assert (analyze, vacuum) == (False, False)
    assert upkeep.due(mods=0, dead=10_000, reltuples=1000.0, autovacuum=False) == (False, True)
    # Never analyzed (reltuples -1): the first 51 changes are enough.
    assert upkeep.due(mods=51, dead=0, reltuples=-1.0, autovacuum=True) == (True, False)
    assert upkeep.due(mods=50, dead=0, reltuples=-1.0, autovacuum=True) == (False, False)


def test_a_second_upkeep_does_not_queue_behind_a_running_one(pg: Database) -> None:
    fill(pg, 100)
    holder = create_engine(pg.url, isolation_level="AUTOCOMMIT")
    try:
        with holder.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": upkeep.LOCK_KEY})
            report = upkeep.run(pg)
            assert report.skipped == "another upkeep is running"
            assert report.analyzed == []
            assert stats(pg)["deliveries"]["last_analyze"] is None
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": upkeep.LOCK_KEY})
    finally:
        holder.dispose()
    assert "deliveries" in upkeep.run(pg).analyzed


def test_sqlite_is_optimized_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    upgrade(url)
    db = Database(url)
    fill(db, 50)
    report = upkeep.run(db)
    assert report.skipped == "sqlite: PRAGMA optimize"
    with db.session() as session:  # the store is untouched and still writable
        assert session.query(Customer).count() == 50


@pytest.mark.parametrize("stack", ["pg-redis"], indirect=True)
def test_the_beat_schedules_upkeep_and_a_worker_runs_it(stack: Stack) -> None:
    from workers.app import beat_schedule

    entry = beat_schedule(stack.settings)["upkeep"]
    assert entry["schedule"] == stack.settings.upkeep_interval_s
    db = stack.rt.db
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE customers SET (autovacuum_enabled = off)")
        conn.commit()
    with db.session() as session:
        session.execute(insert(Customer), [{"id": str(uuid.uuid4()), "fields": {}} for _ in range(500)])
        flush_stats(session.connection())
    assert stats(db)["customers"]["last_analyze"] is None
    stack.celery.send_task(entry["task"], **entry["options"])
    wait_for(lambda: stats(db)["customers"]["last_analyze"] is not None, timeout=30, what="upkeep to run")
