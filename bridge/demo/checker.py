"""Does every system agree? Reads each system through its own API and compares.

For every live canonical customer and every system the bridge writes to, the system must
hold exactly one record linked to it, and that record must hold what the customer
projects to in that system. No system may hold two records of one person (same e-mail or
phone) or a record the bridge does not know. Used by the demo and the chaos checks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bridge import canonical
from bridge.adapters.base import Adapter, ExternalRecord
from bridge.adapters.errors import RetryableError
from bridge.engine import customers as cust
from bridge.runtime import Runtime
from bridge.store.models import Customer, Link


@dataclass
class SystemCheck:
    records: int = 0
    agree: int = 0
    missing: list[str] = field(default_factory=list)
    differs: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)


@dataclass
class CheckReport:
    customers: int
    systems: dict[str, SystemCheck]

    @property
    def converged(self) -> bool:
        return all(not (s.missing or s.differs or s.unknown or s.duplicates) for s in self.systems.values())

    @property
    def duplicates(self) -> int:
        return sum(len(s.duplicates) for s in self.systems.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "customers": self.customers,
            "systems": {
                name: {
                    "records": s.records,
                    "agree": s.agree,
                    "missing": s.missing[:20],
                    "differs": s.differs[:20],
                    "unknown": s.unknown[:20],
                    "duplicates": s.duplicates[:20],
                }
                for name, s in self.systems.items()
            },
        }


# How long a read waits out the vendor's rate limit or outage before giving up.
READ_PATIENCE_S = 120.0


def read_all(adapter: Adapter, patience_s: float = READ_PATIENCE_S) -> list[ExternalRecord]:
    """Every live record the system holds, read through its API.

    The checker spends the same account budget as the bridge (Loyverse: 300 requests per
    300 s), so a 429 is expected here, not a finding: it is waited out like the bridge
    would, then the whole listing is read again.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return [r for r in adapter.poll(None) if not r.deleted]
        except RetryableError as err:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(max(err.retry_after or 1.0, 0.5), 30.0))


def check(rt: Runtime) -> CheckReport:
    region = rt.settings.default_region
    with rt.db.session() as session:
        live = {
            c.id: c
            for c in session.scalars(
                select(Customer).where(Customer.deleted.is_(False), Customer.merged_into.is_(None))
            )
        }
        links = session.scalars(select(Link).where(Link.synced_at.is_not(None))).all()
        by_system: dict[str, dict[str, str]] = defaultdict(dict)
        for link in links:
            if link.external_id:
                by_system[link.system][link.external_id] = link.customer_id
        states = {cid: cust.load_state(c) for cid, c in live.items()}
    report = CheckReport(customers=len(live), systems={})
    for system in rt.targets():
        adapter = rt.adapter(system)
        result = SystemCheck()
        held: dict[str, canonical.Values] = {}
        for record in read_all(adapter):
            held[record.external_id] = cust.held_values(adapter, record.native, region)
        result.records = len(held)
        linked = by_system.get(system, {})
        seen_customers: set[str] = set()
        for external_id, values in held.items():
            customer_id = linked.get(external_id)
            if customer_id is None or customer_id not in live:
                result.unknown.append(external_id)
                continue
            seen_customers.add(customer_id)
            wanted = cust.project(adapter, states[customer_id], region)
            if values == wanted:
                result.agree += 1
            else:
                diff = {
                    k: {"has": values.get(k), "wants": wanted.get(k)}
                    for k in wanted
                    if values.get(k) != wanted.get(k)
                }
                result.differs.append({"customer": customer_id, "record": external_id, "fields": diff})
        for customer_id, state in states.items():
            if customer_id in seen_customers:
                continue
            if any(cust.project(adapter, state, region).values()):
                result.missing.append(customer_id)
        keys: dict[tuple[str, str], list[str]] = defaultdict(list)
        for external_id, values in held.items():
            for key in canonical.match_keys(values):
                if key[0] in ("email", "phone"):
                    keys[key].append(external_id)
        groups = {tuple(sorted(ids)) for ids in keys.values() if len(ids) > 1}
        result.duplicates = [list(group) for group in sorted(groups)]
        report.systems[system] = result
    return report
