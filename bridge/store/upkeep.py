"""Database upkeep: planner statistics and dead rows, whoever else does (or does not) see to them.

The engine's lookups run as prepared statements, which Postgres plans once for any
parameters (tests/test_query_plans.py). A table that has never been analyzed gives that
plan no statistics to choose by, and the planner may then pick an index that reads every
delivery of a target to find one customer's. With autovacuum on, its first ANALYZE comes
within a minute and the next at each 10 % of growth. With autovacuum off (as on this
project's CI machines) none ever came: for over an hour of the 100,000-customer backfill
every "is one already waiting?" lookup read about 22,000 index entries, and every
delivery and inbox row updated two or three times left its old versions behind.

So the bridge applies autovacuum's own thresholds itself. ANALYZE is cheap and runs
whenever a table has crossed its threshold since its last analysis, by anyone. VACUUM
runs only where autovacuum will not (off on the server or on the table), since
autovacuum throttles its vacuums and ours would not be.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from bridge.store.db import Database
from bridge.store.models import Base

log = logging.getLogger("posbridge.upkeep")

# autovacuum's defaults (autovacuum_*_threshold and *_scale_factor).
ANALYZE_BASE = 50
ANALYZE_SCALE = 0.1
VACUUM_BASE = 50
VACUUM_SCALE = 0.2
# Held for a pass: a VACUUM slower than the beat's interval does not get a second pass
# queued behind it on the same table.
LOCK_KEY = 0x706F7362_75706B70  # "posb" "upkp"
# Table-level `autovacuum_enabled` as pg_class.reloptions spells it when off.
_OFF = frozenset(f"autovacuum_enabled={v}" for v in ("false", "off", "no", "0"))

_STATS = text(
    """
    SELECT s.relname, s.n_mod_since_analyze, s.n_dead_tup, c.reltuples, c.reloptions
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY(:names)
    ORDER BY s.relname
    """
)


@dataclass
class UpkeepReport:
    analyzed: list[str] = field(default_factory=list)
    vacuumed: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was looked at
    seconds: float = 0.0


def due(mods: int, dead: int, reltuples: float, autovacuum: bool) -> tuple[bool, bool]:
    """(analyze, vacuum) for one table, by autovacuum's rules."""
    rows = max(reltuples, 0.0)  # -1 until the first VACUUM or ANALYZE
    analyze = mods > ANALYZE_BASE + ANALYZE_SCALE * rows
    vacuum = not autovacuum and dead > VACUUM_BASE + VACUUM_SCALE * rows
    return analyze, vacuum


def run(db: Database) -> UpkeepReport:
    started = time.perf_counter()
    report = UpkeepReport()
    if db.is_sqlite:
        # SQLite plans each statement with its parameters; `optimize` analyzes only where
        # its own counters say the plans would gain.
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA optimize")
            conn.commit()
        report.skipped = "sqlite: PRAGMA optimize"
    else:
        # VACUUM refuses to run inside a transaction.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}):
                report.skipped = "another upkeep is running"
            else:
                try:
                    _postgres(conn, report)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    report.seconds = time.perf_counter() - started
    if report.analyzed or report.vacuumed:
        log.info(
            "upkeep: analyzed %s, vacuumed %s in %.1f s",
            ",".join(report.analyzed) or "-",
            ",".join(report.vacuumed) or "-",
            report.seconds,
        )
    return report


def _postgres(conn: Connection, report: UpkeepReport) -> None:
    server_autovacuum = conn.scalar(text("SELECT current_setting('autovacuum')")) == "on"
    names = sorted(Base.metadata.tables)
    quote = conn.dialect.identifier_preparer.quote
    for relname, mods, dead, reltuples, options in conn.execute(_STATS, {"names": names}).all():
        table_off = any(o.replace(" ", "").lower() in _OFF for o in options or ())
        analyze, vacuum = due(int(mods), int(dead), float(reltuples), server_autovacuum and not table_off)
        if vacuum:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {quote(relname)}")
            report.vacuumed.append(relname)
            report.analyzed.append(relname)
        elif analyze:
            conn.exec_driver_sql(f"ANALYZE {quote(relname)}")
            report.analyzed.append(relname)
