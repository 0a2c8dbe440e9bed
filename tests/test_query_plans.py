"""The lookups made for every event and every planned change stay index lookups on Postgres.

psycopg prepares a statement on its sixth run, and Postgres may then plan it once for
any parameters (a generic plan). Such a plan cannot use a partial index whose predicate,
`state = 'pending'`, only a bound parameter meets. The 100,000-customer backfill found
the deliveries' "one already waiting?" reading every delivery of the target through
(target, state), 6.97 billion index entries in an hour, and ingest's "earlier waiting
events of this record" every waiting inbox row of the system. These tests run the
engine's own lookups, capture what they send, and plan each one the way a prepared
statement is planned.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql
from sqlalchemy import event, insert, text
from sqlalchemy.engine import Connection

from bridge.canonical import utcnow
from bridge.config import Settings
from bridge.engine import customers, ingest, sweep
from bridge.runtime import Runtime
from bridge.store import upkeep
from bridge.store.migrate import upgrade
from bridge.store.models import Customer, Delivery, InboxEvent, InboxState
from tests.harness import create_pg_database, drop_pg_database, service_or_skip, waiting_among_done

pytestmark = pytest.mark.services

CUSTOMERS = 3000
TARGETS = ("square", "loyverse", "onsite")


@pytest.fixture(scope="module")
def rt() -> Iterator[Runtime]:
    service_or_skip("Postgres", "127.0.0.1", 5432)
    url = create_pg_database()
    try:
        upgrade(url)
        runtime = Runtime(Settings(database_url=url, systems=["square", "loyverse", "onsite"]))
        _fill(runtime)
        yield runtime
        runtime.close()
    finally:
        drop_pg_database(url)


def _fill(rt: Runtime) -> None:
    """A store in mid-backfill: most deliveries done, one waiting per customer and target,
    and a deep inbox of echoes; then the statistics a planner would have."""
    now = utcnow()
    ids = [str(uuid.UUID(int=n + 1)) for n in range(CUSTOMERS)]
    with rt.db.session() as session:
        session.execute(insert(Customer), [{"id": cid, "fields": {}} for cid in ids])
        session.execute(insert(Delivery), waiting_among_done(ids, TARGETS, now))
        inbox = [
            {
                "system": TARGETS[n % 3],
                "event_id": f"evt-{n}",
                "event_type": "customer.updated",
                "kind": "upsert",
                "external_id": f"ext-{n % CUSTOMERS}",
                "event": "{}",
                "state": InboxState.PENDING if n % 4 else InboxState.DONE,
                "received_at": now - timedelta(seconds=n),
                "enqueued_at": now - timedelta(seconds=20),
            }
            for n in range(4 * CUSTOMERS)
        ]
        session.execute(insert(InboxEvent), inbox)
        # Reported at this commit, not up to a second later: upkeep reads these counts.
        session.execute(text("SELECT pg_stat_force_next_flush()"))
    # The statistics come from the bridge's own upkeep, as in production: with autovacuum
    # off nothing else makes them, and without them the deliveries' lookup below plans
    # through (target, state) (tests/test_upkeep.py).
    upkeep.run(rt.db)
    with rt.db.engine.connect() as conn:
        never = conn.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables"
                " WHERE relname IN ('customers', 'deliveries', 'inbox')"
                " AND last_analyze IS NULL AND last_autoanalyze IS NULL"
            )
        ).scalars()
        assert list(never) == []


def _captured(rt: Runtime, run: Any) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, dict(params or {})))

    event.listen(rt.db.engine, "before_cursor_execute", grab)
    try:
        with rt.db.session() as session:
            run(session)
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", grab)
    assert seen, "the lookup sent no SELECT"
    return seen


def _generic_plan(conn: Connection, statement: str, params: dict[str, Any]) -> str:
    """EXPLAIN the statement as a prepared statement's generic plan (what psycopg's
    server-side prepare gets once Postgres stops planning per call)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", number, statement)
    raw = conn.connection.driver_connection
    args = sql.SQL(", ").join(sql.Literal(params[n]) for n in names).as_string(raw)
    conn.execute(text("SET plan_cache_mode = force_generic_plan"))
    conn.exec_driver_sql(f"PREPARE lookup AS {numbered}")
    try:
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE lookup({args})").all()
    finally:
        conn.exec_driver_sql("DEALLOCATE lookup")
    return "\n".join(r[0] for r in rows)


def _index_conds(plan: str) -> str:
    return "\n".join(line for line in plan.splitlines() if "Index Cond" in line)


def _assert_looked_up_by(rt: Runtime, captured: list[tuple[str, dict[str, Any]]], *columns: str) -> None:
    with rt.db.engine.connect() as conn:
        for statement, params in captured:
            plan = _generic_plan(conn, statement, params)
            conds = _index_conds(plan)
            assert "Seq Scan" not in plan, plan
            for column in columns:
                assert f"({column})" in conds, f"{column} not in the index condition:\n{plan}"


def test_is_a_delivery_already_waiting_is_a_lookup_by_customer_and_target(rt: Runtime) -> None:
    customer_id = str(uuid.UUID(int=CUSTOMERS // 2))

    def run(session: Any) -> None:
        # One waits already: the change rides it and nothing is planned.
        assert (
            customers.ensure_delivery(session, rt, customer_id, "loyverse", "square", None, utcnow()) is None
        )

    _assert_looked_up_by(rt, _captured(rt, run), "customer_id", "target")


def test_a_records_earlier_waiting_events_are_a_lookup_by_record(rt: Runtime) -> None:
    external_id = "ext-3"  # events 3, 3003, 6003 and 9003: square, all waiting

    def run(session: Any) -> None:
        found = ingest._waiting(session, "square", external_id, before=None)
        assert found, "the filled inbox has waiting events of this record"
        ingest._waiting(session, "square", external_id, before=max(found))

    _assert_looked_up_by(rt, _captured(rt, run), "system", "external_id")


def _every_index_condition_names(
    rt: Runtime, captured: list[tuple[str, dict[str, Any]]], column: str
) -> None:
    """Each index scan is bounded by `column`: not a walk over every waiting row."""
    with rt.db.engine.connect() as conn:
        for statement, params in captured:
            plan = _generic_plan(conn, statement, params)
            assert "Seq Scan" not in plan, plan
            scans = [line for line in plan.splitlines() if "Index Scan" in line or "Index Only Scan" in line]
            conds = [line for line in plan.splitlines() if "Index Cond" in line]
            assert scans, plan
            assert len(conds) == len(scans), plan
            assert all(column in cond for cond in conds), plan


def test_the_sweepers_lost_inbox_rows_are_index_ranges_behind_a_backlog(rt: Runtime) -> None:
    now = utcnow()
    stale = now - timedelta(seconds=rt.settings.requeue_after_s)

    def run(session: Any) -> None:
        # A deep ingest queue whose last taken marker was sent a minute ago.
        sweep._lost_inbox(session, {"ingest": 50_000}, {"ingest": now - timedelta(minutes=1)}, stale)
        # An empty one: the plain stale rule.
        sweep._lost_inbox(session, {"ingest": 0}, {}, stale)

    _every_index_condition_names(rt, _captured(rt, run), "enqueued_at")


def test_the_sweepers_unsent_deliveries_are_index_ranges_behind_a_backlog(rt: Runtime) -> None:
    now = utcnow()
    read = {f"push.{t}": now - timedelta(minutes=1) for t in TARGETS}

    def run(session: Any) -> None:
        sweep._due_deliveries(session, rt, list(TARGETS), {f"push.{t}": 0 for t in TARGETS}, read, now)

    # The grouped count of due deliveries reads them all by design (it is matched against
    # the queue's depth); the lookups of unsent and lost ones must not.
    captured = [(s, p) for s, p in _captured(rt, run) if "count(" not in s]
    _every_index_condition_names(rt, captured, "enqueued_at")
