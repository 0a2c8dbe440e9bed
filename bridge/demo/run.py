"""`posbridge demo`: five POS sandboxes, the bridge, a worker and beat, on the embedded
default (SQLite for data and broker, no server), with realistic till activity and faults.

It seeds every sandbox with its own customers (some of them the same person in several
systems), lets the bridge link them (backfill), then plays till activity: new customers,
edits in two systems at once, a burst of edits to one customer, a Square-style merge,
orders in the order system (one for a code nobody has yet), with faults switched on. A
live view shows every customer converging across the systems. It exits 0 only when every
system agrees with the bridge and no system holds a duplicate.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import func, select

from bridge import canonical as c
from bridge import metrics
from bridge.adapters import registry
from bridge.adapters.base import Capability
from bridge.adapters.errors import RetryableError
from bridge.demo import people
from bridge.demo.checker import CheckReport, check
from bridge.demo.processes import ServerThread, WorkerProcess, free_port
from bridge.store.models import Delivery

FAULTS: dict[str, dict[str, Any]] = {
    "off": {
        "error_rate": 0.0,
        "rate_limit_rate": 0.0,
        "lose_response_after_commit_rate": 0.0,
        "latency_ms": 0.0,
        "webhook_duplicate_rate": 0.0,
        "webhook_jitter_ms": 0.0,
    },
    "light": {
        "error_rate": 0.05,
        "rate_limit_rate": 0.02,
        "lose_response_after_commit_rate": 0.03,
        "latency_ms": 5,
        "webhook_duplicate_rate": 0.1,
        "webhook_jitter_ms": 100,
    },
    "heavy": {
        "error_rate": 0.2,
        "rate_limit_rate": 0.1,
        "lose_response_after_commit_rate": 0.05,
        "latency_ms": 50,
        "webhook_duplicate_rate": 0.3,
        "webhook_jitter_ms": 300,
    },
}


@dataclass
class Options:
    customers: int = 24
    seconds: float = 30.0
    faults: str = "light"
    as_json: bool = False
    settle_timeout: float = 90.0
    seed: int | None = None
    keep: bool = False


class Demo:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.console = Console(stderr=opts.as_json)
        self.var = Path(tempfile.mkdtemp(prefix="posbridge-demo-"))
        self.classes = {n: cls for n, cls in registry.available().items() if cls.sandbox_class}
        self.systems = list(self.classes)
        self.writable = [
            s
            for s in self.systems
            if Capability.CREATE in self.classes[s].capabilities
            and Capability.READ_ONLY not in self.classes[s].capabilities
        ]
        self.order_systems = [s for s in self.systems if Capability.ORDERS in self.classes[s].capabilities]
        self.log: list[str] = []
        self.history: list[str] = []
        self.counter = 0
        self.started = time.monotonic()
        self.phase = "starting"

    # -- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        web_port = free_port()
        self.web_url = f"http://127.0.0.1:{web_port}"
        tokens = {s: secrets.token_urlsafe(12) for s in self.systems}
        self.sandboxes = {
            s: registry.load_object(cls.sandbox_class or "").for_demo(
                f"{self.web_url}/webhooks/{s}/{tokens[s]}"
            )
            for s, cls in self.classes.items()
        }
        for sandbox in self.sandboxes.values():
            sandbox.set_faults({"webhooks_enabled": False})  # seeding happens before the bridge runs
        self.servers = {s: ServerThread(sb.app).start() for s, sb in self.sandboxes.items()}
        env = {
            "POSBRIDGE_VAR_DIR": str(self.var),
            "POSBRIDGE_DATABASE_URL": f"sqlite:///{self.var}/posbridge.sqlite",
            "POSBRIDGE_BROKER_URL": f"sqla+sqlite:///{self.var}/broker.sqlite",
            "POSBRIDGE_SYSTEMS": ",".join(self.systems),
            "POSBRIDGE_EXTRA_ADAPTERS": "",
            "POSBRIDGE_COALESCE_WINDOW_S": "0.3",
            "POSBRIDGE_LEASE_S": "20",
            "POSBRIDGE_REQUEUE_AFTER_S": "3",
            "POSBRIDGE_SWEEP_INTERVAL_S": "1",
            "POSBRIDGE_RETRY_BASE_S": "0.3",
            "POSBRIDGE_RETRY_CAP_S": "4",
            "POSBRIDGE_MAX_ATTEMPTS": "30",
            "POSBRIDGE_PROBE_INTERVAL_S": "2",
            "POSBRIDGE_DELETE_GRACE_S": "3",
            "POSBRIDGE_LOG_LEVEL": "WARNING",
            "POSBRIDGE_LOG_JSON": "true",
        }
        for s, sandbox in self.sandboxes.items():
            prefix = f"POSBRIDGE_{s.upper()}_"
            caps = self.classes[s].capabilities
            pushed = Capability.WEBHOOKS in caps
            env[prefix + "WEBHOOK_PATH_TOKEN"] = tokens[s]
            env[prefix + "POLL_INTERVAL_S"] = "15" if pushed else "1"
            env[prefix + "POLL_OVERLAP_S"] = "10"
            env[prefix + "TIMEOUT_S"] = "8"
            for key, value in sandbox.adapter_env(self.servers[s].url).items():
                env[prefix + key.upper()] = value
        os.environ.update(env)
        from bridge.config import Settings, reset_settings
        from bridge.runtime import Runtime, set_runtime
        from bridge.store.migrate import upgrade
        from bridge.web.app import create_app
        from workers.app import build_app
        from workers.dispatch import CeleryDispatcher

        reset_settings()
        self.settings = Settings()
        upgrade(self.settings.db_url)
        self.rt = Runtime(self.settings, dispatcher=CeleryDispatcher(build_app(self.settings, tasks=False)))
        self.rt.validate()
        set_runtime(self.rt)
        self.env = env
        self.web = ServerThread(create_app(self.rt), port=web_port)

    def call(self, system: str, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.servers[system].url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def till(self, system: str, values: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
        """A person at `system`'s till enters these canonical values (in that POS's terms)."""
        adapter = self.rt.adapter(system)
        native = adapter.from_canonical({f: values.get(f) for f in adapter.fields})
        if record_id is None:
            native = {k: v for k, v in native.items() if v not in (None, "", [], {})}
        result: dict[str, Any] = self.call(
            system, "POST", "/_sandbox/edit", json={"id": record_id, "fields": native}
        )
        return result

    def has_control(self, system: str, path: str) -> bool:
        """Whether this sandbox offers an extra control call (e.g. a merge)."""
        for route in self.sandboxes[system].app.routes:
            if getattr(route, "path", "") == "/_sandbox":
                return any(getattr(r, "path", "") == path for r in getattr(route, "routes", []))
        return False

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:5.1f}s  {text}")
        self.history.append(self.log[-1])
        self.log = self.log[-8:]

    # -- phases -------------------------------------------------------------------------
    def seed(self) -> None:
        self.phase = "seeding the tills"
        for n in range(self.opts.customers):
            values = people.person(n, self.rng)
            holders = self.rng.sample(self.writable, k=self.rng.choice([1, 1, 1, 2, 2, 3]))
            for system in holders:
                self.till(system, values)
        self.counter = self.opts.customers
        self.note(f"seeded {self.opts.customers} people across {', '.join(self.writable)}")

    def backfill(self) -> None:
        from bridge.engine.backfill import link_system, plan_all

        self.phase = "backfill: linking what each system already has"
        for system in self.writable:
            if Capability.POLLING in self.classes[system].capabilities:
                report = link_system(self.rt, system)
                self.note(f"backfill {system}: {report.read} read, {report.outcomes}")
        planned = plan_all(self.rt)
        self.note(f"backfill planned {planned} writes to fill the gaps")

    def start_bridge(self) -> None:
        self.phase = "starting the bridge"
        self.web.start()
        self.worker = WorkerProcess(self.env, self.var / "worker.log", concurrency=3).start()
        for sandbox in self.sandboxes.values():
            sandbox.set_faults({"webhooks_enabled": True})

    def set_faults(self, preset: str) -> None:
        for system in self.systems:
            self.call(system, "POST", "/_sandbox/faults", json={**FAULTS["off"], **FAULTS[preset]})

    def linked(self, system: str) -> list[tuple[str, str]]:
        from bridge.store.models import Customer, Link

        with self.rt.db.session() as s:
            rows = s.execute(
                select(Link.customer_id, Link.external_id)
                .join(Customer, Customer.id == Link.customer_id)
                .where(
                    Link.system == system,
                    Link.synced_at.is_not(None),
                    Customer.deleted.is_(False),
                    Customer.merged_into.is_(None),
                )
            ).all()
        return [(cid, ext) for cid, ext in rows if ext]

    def current(self, customer_id: str) -> dict[str, Any]:
        from bridge.store.models import Customer

        with self.rt.db.session() as s:
            customer = s.get_one(Customer, customer_id)
            return {k: v.get("v") for k, v in (customer.fields or {}).items()}

    def activity(self, refresh: Callable[[], None]) -> None:
        self.phase = f"till activity with {self.opts.faults} faults"
        self.set_faults(self.opts.faults)
        deadline = time.monotonic() + self.opts.seconds
        scripted = ["merge", "orphan_order", "burst", "concurrent"]
        while time.monotonic() < deadline:
            action = (
                scripted.pop()
                if scripted
                else self.rng.choice(["create", "edit", "edit", "edit", "concurrent", "order", "burst"])
            )
            try:
                getattr(self, f"act_{action}")()
            except (httpx.HTTPError, ValueError, KeyError, IndexError, LookupError) as err:
                self.note(f"{action} skipped: {err}")
            refresh()
            time.sleep(self.rng.uniform(0.2, 0.6))
        self.set_faults("off")

    def act_create(self) -> None:
        self.counter += 1
        system = self.rng.choice(self.writable)
        values = people.person(self.counter, self.rng)
        self.till(system, values)
        self.note(f"new customer {values[c.GIVEN_NAME]} {values[c.FAMILY_NAME]} at the {system} till")

    def _pick(self, system: str) -> tuple[str, str]:
        return self.rng.choice(self.linked(system))

    def act_edit(self) -> None:
        system = self.rng.choice(self.writable)
        customer_id, external_id = self._pick(system)
        values = self.current(customer_id)
        self.counter += 1
        change = people.edit(values, self.rng, self.counter)
        self.till(system, {**values, **change}, external_id)
        self.note(f"{system} till edits {', '.join(change)} of {values.get(c.GIVEN_NAME)}")

    def act_concurrent(self) -> None:
        first, second = self.rng.sample(self.writable, 2)
        both = set(dict(self.linked(first))) & set(dict(self.linked(second)))
        customer_id = self.rng.choice(sorted(both))
        values = self.current(customer_id)
        self.counter += 1
        note = {c.NOTE: f"noted at {first} #{self.counter}"}
        phone = {c.PHONE_MOBILE: f"+1415557{self.counter % 10000:04d}"}
        self.till(first, {**values, **note}, dict(self.linked(first))[customer_id])
        self.till(second, {**values, **phone}, dict(self.linked(second))[customer_id])
        self.note(f"same second: note at {first}, phone at {second} for {values.get(c.GIVEN_NAME)}")

    def act_burst(self) -> None:
        system = self.rng.choice(self.writable)
        customer_id, external_id = self._pick(system)
        values = self.current(customer_id)
        for i in range(5):
            self.till(system, {**values, c.NOTE: f"burst {i} of 5"}, external_id)
        self.note(f"burst of 5 edits to {values.get(c.GIVEN_NAME)} at {system}")

    def act_merge(self) -> None:
        merging = [s for s in self.writable if self.has_control(s, "/merge")]
        if not merging:
            return
        system = merging[0]
        customer_id, external_id = self._pick(system)
        values = self.current(customer_id)
        sandbox = self.sandboxes[system]
        # A duplicate profile made at the till and not yet synced, then merged by the
        # merchant: the bridge must re-point its link and create nothing.
        sandbox.set_faults({"webhooks_enabled": False})
        duplicate = self.till(
            system,
            {
                c.GIVEN_NAME: values.get(c.GIVEN_NAME),
                c.FAMILY_NAME: values.get(c.FAMILY_NAME),
                c.NOTE: "walk-in, same person",
            },
        )
        sandbox.set_faults({"webhooks_enabled": True})
        self.call(system, "POST", "/_sandbox/merge", json={"customer_ids": [external_id, duplicate["id"]]})
        self.note(f"{system} merged a duplicate profile of {values.get(c.GIVEN_NAME)}")

    def _order(self, code: str, reference: str) -> None:
        for system in self.order_systems:
            self.call(
                system,
                "POST",
                "/_sandbox/edit",
                json={
                    "fields": {
                        "customerID": code,
                        "reference": reference,
                        "status": 4,
                        "orderType": 1,
                        "comment": "web order",
                    }
                },
            )

    def act_order(self) -> None:
        if not self.order_systems:
            return
        from bridge.store.models import Customer

        with self.rt.db.session() as s:
            customers = s.scalars(
                select(Customer).where(Customer.deleted.is_(False), Customer.merged_into.is_(None))
            ).all()
            codes = [v for cu in customers if (v := (cu.fields or {}).get(c.CUSTOMER_CODE, {}).get("v"))]
        code = self.rng.choice(codes)
        self.counter += 1
        self._order(code, f"WEB-{self.counter}")
        self.note(f"order WEB-{self.counter} for customer {code}")

    def act_orphan_order(self) -> None:
        if not self.order_systems:
            return
        self.counter += 1
        code = f"C{90000 + self.counter}"
        self._order(code, f"WEB-{self.counter}")
        self.note(f"order for unknown customer {code}: kept unlinked until {code} appears")
        values = people.person(self.counter, self.rng)
        values[c.CUSTOMER_CODE] = code
        holders = [s for s in self.writable if c.CUSTOMER_CODE in self.rt.adapter(s).fields]
        if holders:
            time.sleep(1.5)
            self.till(self.rng.choice(holders), values)
            self.note(f"customer {code} created at a till: the order links by itself")

    # -- convergence --------------------------------------------------------------------
    def idle(self) -> bool:
        from bridge.store.models import Delivery, DeliveryState, InboxEvent, InboxState

        with self.rt.db.session() as s:
            busy = s.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.state.in_([DeliveryState.PENDING, DeliveryState.IN_FLIGHT]))
            )
            inbox = s.scalar(
                select(func.count()).select_from(InboxEvent).where(InboxEvent.state == InboxState.PENDING)
            )
        pending_hooks = sum(sb.webhooks.pending for sb in self.sandboxes.values())
        return not busy and not inbox and not pending_hooks

    def settle(self, refresh: Callable[[], None]) -> CheckReport:
        self.phase = "faults off: waiting for every system to agree"
        deadline = time.monotonic() + self.opts.settle_timeout
        report = self.check()
        quiet = 0
        while time.monotonic() < deadline:
            refresh()
            quiet = quiet + 1 if self.idle() else 0
            if quiet >= 3:
                report = self.check()
                if report.converged:
                    return report
                quiet = 0
            time.sleep(0.5)
        return self.check()

    def check(self) -> CheckReport:
        for attempt in range(5):
            try:
                return check(self.rt)
            except RetryableError:
                if attempt == 4:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    # -- reporting ----------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        from bridge.store.models import Attempt, Customer, Delivery, InboxEvent, Order

        with self.rt.db.session() as s:
            outcomes = dict(
                s.execute(select(InboxEvent.outcome, func.count()).group_by(InboxEvent.outcome)).all()
            )
            states = dict(s.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())
            recovered = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.action == "lookup"))
            customers = s.scalar(
                select(func.count())
                .select_from(Customer)
                .where(Customer.deleted.is_(False), Customer.merged_into.is_(None))
            )
            orders = dict(
                s.execute(
                    select(Order.customer_id.is_(None), func.count()).group_by(Order.customer_id.is_(None))
                ).all()
            )
        stats = {s: self.call(s, "GET", "/_sandbox/stats") for s in self.systems}
        duplicates = sum(
            metrics.sample("posbridge_webhook_events_total", {"system": s, "outcome": "duplicate"})
            for s in self.systems
        )
        return {
            "customers": int(customers or 0),
            "events": int(sum(outcomes.values())),
            "outcomes": {str(k): int(v) for k, v in outcomes.items()},
            "echoes_suppressed": int(outcomes.get("echo", 0)) + int(outcomes.get("adopted", 0)),
            "writes": {s: int(stats[s]["writes"]) for s in self.writable},
            "requests": {s: int(stats[s]["requests_total"]) for s in self.systems},
            "faults_injected": {s: stats[s]["faults"] for s in self.systems},
            "deliveries": {str(k): int(v) for k, v in states.items()},
            "duplicates_avoided": {
                "redelivered_webhooks_dropped": int(duplicates),
                "lost_creates_found_not_repeated": int(recovered or 0),
            },
            "orders": {"linked": int(orders.get(False, 0)), "unlinked": int(orders.get(True, 0))},
        }

    def view(self) -> Panel:
        from bridge.store.models import Customer, Link

        counters = self.counters()
        with self.rt.db.session() as s:
            customers = s.scalars(
                select(Customer)
                .where(Customer.deleted.is_(False), Customer.merged_into.is_(None))
                .order_by(Customer.updated_at.desc())
                .limit(12)
            ).all()
            links = {
                (lk.customer_id, lk.system): lk
                for lk in s.scalars(select(Link).where(Link.customer_id.in_([cu.id for cu in customers])))
            }
            pending = {
                (d_cid, d_target)
                for d_cid, d_target in s.execute(
                    select(Delivery.customer_id, Delivery.target).where(
                        Delivery.state.in_(["pending", "in_flight"])
                    )
                )
            }
        table = Table(expand=True, title="latest customers across the systems")
        table.add_column("customer")
        for system in self.writable:
            table.add_column(system, justify="center")
        for cu in customers:
            cells = []
            for system in self.writable:
                link = links.get((cu.id, system))
                if (cu.id, system) in pending:
                    cells.append("[yellow]syncing[/yellow]")
                elif link is not None and link.synced_at is not None:
                    cells.append("[green]in step[/green]")
                else:
                    cells.append("[red]missing[/red]")
            table.add_row(cu.display_name[:28], *cells)
        deliveries = counters["deliveries"]
        avoided = counters["duplicates_avoided"]
        head = (
            f"[bold]{self.phase}[/bold]  ({time.monotonic() - self.started:.0f}s)\n"
            f"customers {counters['customers']} · events {counters['events']} · "
            f"writes {sum(counters['writes'].values())} · "
            f"echoes suppressed {counters['echoes_suppressed']} · "
            f"duplicate webhooks dropped {avoided['redelivered_webhooks_dropped']} · "
            f"lost creates found {avoided['lost_creates_found_not_repeated']} · "
            f"deliveries done {deliveries.get('done', 0)} failed {deliveries.get('failed', 0)}"
        )
        return Panel(
            Group(head, table, "\n".join(self.log[-max(2, self.rows() // 2) :])), title="posbridge demo"
        )

    def rows(self) -> int:
        # The live view must fit the terminal, or every refresh scrolls a new copy.
        return max(3, min(12, self.console.size.height - 20))

    def stop(self) -> None:
        if getattr(self, "worker", None) is not None:
            self.worker.stop()
        if getattr(self, "web", None) is not None and self.web.server.started:
            self.web.stop()
        if getattr(self, "rt", None) is not None:
            self.rt.close()  # before the sandboxes go: adapters log out of their sessions
        for server in getattr(self, "servers", {}).values():
            server.stop()
        if not self.opts.keep:
            shutil.rmtree(self.var, ignore_errors=True)


def run(opts: Options) -> int:
    demo = Demo(opts)
    summary: dict[str, Any] = {}
    try:
        demo.start()
        demo.seed()
        demo.backfill()
        demo.start_bridge()
        live = Live(console=demo.console, refresh_per_second=4, transient=opts.as_json)
        with live:

            def refresh() -> None:
                if not opts.as_json:
                    live.update(demo.view())

            demo.activity(refresh)
            report = demo.settle(refresh)
            refresh()
        summary = {
            "converged": report.converged,
            "duplicates_in_systems": report.duplicates,
            "seconds": round(time.monotonic() - demo.started, 1),
            "options": {"customers": opts.customers, "seconds": opts.seconds, "faults": opts.faults},
            "check": report.as_dict(),
            **demo.counters(),
            "var_dir": str(demo.var) if opts.keep else None,
            "activity": demo.history,
        }
    finally:
        demo.stop()
    if opts.as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        verdict = (
            "[green]every system agrees, no duplicates[/green]"
            if summary["converged"]
            else ("[red]NOT converged[/red]")
        )
        demo.console.print(
            f"\n{verdict} after {summary['seconds']}s: {summary['customers']} customers, "
            f"{summary['events']} events, writes {summary['writes']}, "
            f"{summary['echoes_suppressed']} echoes suppressed, "
            f"duplicates avoided {summary['duplicates_avoided']}"
        )
        if not summary["converged"]:
            demo.console.print_json(json.dumps(summary["check"], default=str))
    return 0 if summary.get("converged") and not summary.get("duplicates_in_systems") else 1
