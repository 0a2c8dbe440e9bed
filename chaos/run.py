"""`python -m chaos run SCENARIO`: a real stack (web, two workers, beat, Redis or RabbitMQ,
Postgres, five sandbox processes), till activity under one kind of chaos, then the checker.

Exits 1 when the checker fails: a duplicate person in any system, a lost edit (the last
till edit to a (customer, field) missing from the canonical customer or from any system
that holds that field), or no convergence within 60 s after the faults stop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text

from bridge import canonical as c
from bridge.adapters import registry
from bridge.adapters.base import Capability
from bridge.demo import people
from bridge.demo.checker import check, read_all
from bridge.demo.processes import ROOT, WorkerProcess, free_port, wait_for
from chaos.brokers import PrivateBroker, private_broker

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCENARIOS = ("kill_worker", "broker_restart", "sandbox_faults", "webhook_storm", "concurrent", "pos_down")
EDIT_FIELDS = (c.NOTE, c.FAMILY_NAME)
# Edits of one field are this far apart (unless deliberately grouped), so that "the last
# edit" is one the bridge can know: OnSite gives one change time per record and is polled
# (every second here), so a field edit it reports is only known to have happened since
# the previous poll that saw the record. Closer than a few observation intervals, an
# older OnSite field edit seen together with a later edit of another field is
# indistinguishable from a newer one.
SAME_FIELD_GAP_S = 3.0
# The two workers split the queues as deploy/ does (worker-core and the push groups): the
# engine's own work (ingest, polls, the sweeper) never waits behind a vendor's latency.
# Sharing every queue, a full sandbox_faults run had ingest up to a minute behind its
# webhooks, and changes observed that late lose their order (docs/reliability.md).
WORKERS = 2


def worker_queues(n: int, systems: list[str]) -> list[str]:
    return ["ingest", "poll", "maintenance"] if n == 0 else [f"push.{s}" for s in systems]


CONVERGE_S = 60.0
KILL_EVERY_S = 3.0
# How long a cashier keeps trying to save a customer an API session has locked.
TILL_PATIENCE_S = 30.0
BROKER_RESTART_EVERY_S = 15.0
BROKER_DOWN_S = 3.0


@dataclass
class Edit:
    customer: str
    system: str
    field: str
    value: str
    at: float
    # Edits of one field made in two systems within the same second share a group: either
    # may win (last writer by the systems' own clocks), but every system must agree.
    group: int | None = None
    # When the till call was sent (`at` is when it answered): the edit landed in between.
    began: float | None = None


@dataclass
class Result:
    scenario: str
    broker: str
    changes: int = 0
    duration_s: float = 0.0
    convergence_s: float | None = None
    writes: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    lost_edits: list[dict[str, Any]] = field(default_factory=list)
    faults_injected: dict[str, Any] = field(default_factory=dict)
    not_converged: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Fields whose last till edit is not the last the bridge could know of (known_times):
    # the checker then accepts either (see wanted).
    reordered: int = 0
    # Till edits overwritten at a vendor without conditional writes by a bridge update in
    # flight, before any event showed them (see overwritten_in_flight): reported, not failed.
    overwritten_in_flight: list[dict[str, Any]] = field(default_factory=list)
    # Wall seconds per phase (start, seed, drive, converge): where a run's time goes.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.convergence_s is not None and not self.duplicates and not self.lost_edits and not self.errors
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "scenario": self.scenario,
            "broker": self.broker,
            "changes": self.changes,
            "duration_s": round(self.duration_s, 1),
            "convergence_s": None if self.convergence_s is None else round(self.convergence_s, 1),
            "writes": self.writes,
            "duplicates": self.duplicates,
            "lost_edits": len(self.lost_edits),
            "lost_edit_examples": self.lost_edits[:10],
            "faults_injected": self.faults_injected,
            "not_converged": self.not_converged,
            "reordered_by_record_stamps": self.reordered,
            "overwritten_in_flight": len(self.overwritten_in_flight),
            "overwritten_in_flight_examples": self.overwritten_in_flight[:10],
            "errors": self.errors[:10],
            "phases_s": {k: round(v, 1) for k, v in self.phases.items()},
        }


class Stack:
    def __init__(self, broker: str, keep: bool = False, extra_env: dict[str, str] | None = None) -> None:
        self.broker = broker
        self.keep = keep
        self.extra_env = extra_env or {}
        self.var = Path(tempfile.mkdtemp(prefix="posbridge-chaos-"))
        self.private: PrivateBroker = private_broker(broker, self.var)
        self.db_name = f"chaos_{uuid.uuid4().hex[:10]}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.workers: list[WorkerProcess] = []
        self.classes = {n: cls for n, cls in registry.available().items() if cls.sandbox_class}
        self.systems = list(self.classes)
        self.writable = [
            s
            for s in self.systems
            if Capability.CREATE in self.classes[s].capabilities
            and Capability.READ_ONLY not in self.classes[s].capabilities
        ]
        self.ports = {s: free_port() for s in self.systems}
        self.queue_prefix = f"chaos{uuid.uuid4().hex[:6]}."

    def url(self, system: str) -> str:
        return f"http://127.0.0.1:{self.ports[system]}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        log = (self.var / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        engine.dispose()
        web_port = free_port()
        self.web_url = f"http://127.0.0.1:{web_port}"
        tokens = {s: secrets.token_urlsafe(12) for s in self.systems}
        self.private.start()
        broker_url = self.private.url
        self.env: dict[str, str] = {
            "POSBRIDGE_VAR_DIR": str(self.var),
            "POSBRIDGE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{self.db_name}",
            "POSBRIDGE_BROKER_URL": broker_url,
            "POSBRIDGE_QUEUE_PREFIX": self.queue_prefix,
            "POSBRIDGE_SYSTEMS": ",".join(self.systems),
            "POSBRIDGE_EXTRA_ADAPTERS": "",
            "POSBRIDGE_COALESCE_WINDOW_S": "0.3",
            "POSBRIDGE_LEASE_S": "20",
            "POSBRIDGE_REQUEUE_AFTER_S": "3",
            "POSBRIDGE_SWEEP_INTERVAL_S": "1",
            "POSBRIDGE_RETRY_BASE_S": "0.3",
            "POSBRIDGE_RETRY_CAP_S": "4",
            "POSBRIDGE_MAX_ATTEMPTS": "60",
            "POSBRIDGE_PROBE_INTERVAL_S": "2",
            "POSBRIDGE_DELETE_GRACE_S": "3",
            # A kept run is one to be read afterwards: its logs say what each task did.
            "POSBRIDGE_LOG_LEVEL": "INFO" if self.keep else "WARNING",
            "POSBRIDGE_LOG_JSON": "true",
            "POSBRIDGE_WEB_HOST": "127.0.0.1",
            "POSBRIDGE_WEB_PORT": str(web_port),
        }
        for s in self.systems:  # all at once: each spends seconds importing before it listens
            env_file = self.var / f"sandbox-{s}.json"
            hook = f"{self.web_url}/webhooks/{s}/{tokens[s]}"
            self._spawn(
                f"sandbox-{s}",
                [sys.executable, "-m", "chaos.sandbox", s, str(self.ports[s]), hook, str(env_file)],
            )
        for s in self.systems:
            env_file = self.var / f"sandbox-{s}.json"
            wait_for(env_file.exists, timeout=60, what=f"{s} sandbox")
            prefix = f"POSBRIDGE_{s.upper()}_"
            pushed = Capability.WEBHOOKS in self.classes[s].capabilities
            self.env[prefix + "WEBHOOK_PATH_TOKEN"] = tokens[s]
            self.env[prefix + "POLL_INTERVAL_S"] = "15" if pushed else "1"
            self.env[prefix + "POLL_OVERLAP_S"] = "10"
            self.env[prefix + "TIMEOUT_S"] = "8"
            for key, value in json.loads(env_file.read_text()).items():
                self.env[prefix + key.upper()] = value
        for s in self.systems:
            wait_for(lambda s=s: self._answers(self.url(s) + "/_sandbox/stats"), timeout=30, what=f"{s} up")
        self.env.update(self.extra_env)
        os.environ.update(self.env)
        from bridge.config import Settings, reset_settings
        from bridge.runtime import Runtime, set_runtime
        from bridge.store.migrate import upgrade

        reset_settings()
        self.settings = Settings()
        upgrade(self.settings.db_url)
        self.rt = Runtime(self.settings)
        set_runtime(self.rt)
        posbridge = str(Path(sys.executable).with_name("posbridge"))
        self._spawn("web", [posbridge, "web"])
        self._spawn("beat", [posbridge, "beat"])
        for n in range(WORKERS):
            self.workers.append(self._worker(n).start())
        wait_for(lambda: self._answers(self.web_url + "/healthz"), timeout=60, what="web up")

    @staticmethod
    def _answers(url: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code < 500
        return False

    def call(self, system: str, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.url(system) + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def faults(self, system: str, changes: dict[str, Any]) -> None:
        self.call(system, "POST", "/_sandbox/faults", json=changes)

    def _worker(self, n: int) -> WorkerProcess:
        queues = worker_queues(n, self.systems)
        return WorkerProcess(self.env, self.var / f"worker{n}.log", concurrency=2, beat=False, queues=queues)

    def restart_worker(self, n: int) -> None:
        self.workers[n].kill9()
        self.workers[n] = self._worker(n).start()

    def stop(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.kill9()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, OSError):
                os.killpg(proc.pid, 9)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self.rt.db.engine.dispose()
        if self.keep:  # the database goes with the logs: both are what a failed run is read from
            print(f"kept: {self.var} and database {self.db_name}", file=sys.stderr)
        else:
            engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with contextlib.suppress(Exception), engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            engine.dispose()
        with contextlib.suppress(Exception):
            self.private.close()
        if not self.keep:
            shutil.rmtree(self.var, ignore_errors=True)


class Driver:
    """Till activity: seeded customers, then edits with a unique value per change."""

    def __init__(self, stack: Stack, scenario: str, changes: int, seed: int) -> None:
        self.stack = stack
        self.scenario = scenario
        self.changes = changes
        self.rng = random.Random(seed)
        self.edits: list[Edit] = []
        self.last_at: dict[tuple[str, str], float] = {}
        self.group_of: dict[tuple[str, str], int | None] = {}
        self.groups = 0
        self.links: dict[str, dict[str, str]] = {}
        self.result = Result(scenario=scenario, broker=stack.broker)

    def till(self, system: str, native: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.stack.call(
            system, "POST", "/_sandbox/edit", json={"id": record_id, "fields": native}
        )
        return result

    def seed_customers(self, n: int) -> None:
        rt = self.stack.rt
        for i in range(n):
            values = people.person(i, self.rng)
            values[c.EMAIL] = f"chaos{i}.{uuid.uuid4().hex[:6]}@example.com"
            system = self.stack.writable[i % len(self.stack.writable)]
            adapter = rt.adapter(system)
            native = adapter.from_canonical({f: values.get(f) for f in adapter.fields})
            self.till(system, {k: v for k, v in native.items() if v not in (None, "", [], {})})
        wait_for(
            lambda: self._linked_everywhere(n),
            timeout=120,
            interval=1,
            what="seeded customers linked everywhere",
        )

    def _linked_everywhere(self, n: int) -> bool:
        from bridge.store.models import Customer, Link

        with self.stack.rt.db.session() as s:
            rows = s.execute(
                select(Link.customer_id, Link.system, Link.external_id)
                .join(Customer, Customer.id == Link.customer_id)
                .where(
                    Link.synced_at.is_not(None), Customer.deleted.is_(False), Customer.merged_into.is_(None)
                )
            ).all()
        links: dict[str, dict[str, str]] = {}
        for cid, system, ext in rows:
            if ext:
                links.setdefault(cid, {})[system] = ext
        full = {cid: held for cid, held in links.items() if all(s in held for s in self.stack.writable)}
        self.links = full
        return len(full) >= n

    def current(self, customer: str) -> dict[str, Any]:
        from bridge.store.models import Customer

        with self.stack.rt.db.session() as s:
            row = s.get_one(Customer, customer)
            return {k: v.get("v") for k, v in (row.fields or {}).items()}

    def edit(self, system: str, customer: str, fld: str, group: int | None = None) -> None:
        adapter = self.stack.rt.adapter(system)
        if fld not in adapter.fields:
            return
        key = (customer, fld)
        # Apart from a deliberate same-second group, edits of one field are spaced so that
        # "the last edit" is unambiguous (see SAME_FIELD_GAP_S).
        last = self.last_at.get(key, 0.0)
        wait = 0.0 if group is not None and self.group_of.get(key) == group else last + SAME_FIELD_GAP_S
        wait -= time.monotonic() if wait else 0.0
        if wait > 0:
            time.sleep(wait)
        n = len(self.edits) + 1
        value = f"chaos-{fld[:4]}-{n}-{uuid.uuid4().hex[:6]}"
        if fld == c.FAMILY_NAME:
            value = f"Fam{n}x{uuid.uuid4().hex[:4]}"
        base = self.current(customer)
        before = adapter.from_canonical({f: base.get(f) for f in adapter.fields})
        after = adapter.from_canonical({f: ({**base, fld: value}).get(f) for f in adapter.fields})
        native = {k: v for k, v in after.items() if before.get(k) != v}
        patience = time.monotonic() + TILL_PATIENCE_S
        while True:
            at = time.monotonic()
            began = time.time()
            try:
                self.till(system, native, self.links[customer][system])
                break
            except httpx.HTTPStatusError as err:
                # OnSite refuses a till edit while an API session holds the record's lock:
                # the cashier tries again a moment later.
                locked = err.response.status_code == 422 and "locked" in err.response.text
                if locked and time.monotonic() < patience:
                    time.sleep(0.1)
                    continue
                self.result.errors.append(f"till edit {system} {customer} {fld}: {err.response.text[:200]}")
                return
            except httpx.HTTPError as err:
                self.result.errors.append(f"till edit {system} {customer} {fld}: {err}")
                return
        self.last_at[key] = at
        self.group_of[key] = group
        self.edits.append(Edit(customer, system, fld, value, time.time(), group, began))

    def pick(self, fields: tuple[str, ...]) -> str:
        """A random customer none of whose `fields` was edited within SAME_FIELD_GAP_S, so
        the tills keep a steady pace instead of queueing behind one busy record (any
        customer, and a wait in edit(), when every one is busy)."""
        customers = sorted(self.links)
        now = time.monotonic()
        free = [
            cu
            for cu in customers
            if all(self.last_at.get((cu, f), -SAME_FIELD_GAP_S) + SAME_FIELD_GAP_S <= now for f in fields)
        ]
        return self.rng.choice(free or customers)

    def step(self) -> None:
        if self.scenario == "concurrent":
            # The same customer at two tills within the same second: alternately two
            # different fields (both edits must survive) and the same field (one wins,
            # everywhere).
            first, second = self.rng.sample(self.stack.writable, 2)
            customer = self.pick(EDIT_FIELDS)
            if self.rng.random() < 0.5:
                self.edit(first, customer, c.NOTE)
                self.edit(second, customer, c.FAMILY_NAME)
            else:
                self.groups += 1
                self.edit(first, customer, c.NOTE, group=self.groups)
                self.edit(second, customer, c.NOTE, group=self.groups)
        else:
            fld = self.rng.choice(EDIT_FIELDS)
            self.edit(self.rng.choice(self.stack.writable), self.pick((fld,)), fld)


def known_times(stack: Stack, edits: list[Edit]) -> tuple[dict[int, float], set[int]]:
    """When the bridge could know each till edit happened: the earliest change time among
    the inbox events of that system that show the edit's value on that record, and the
    canonical provenance of that value from that system (a read no event records).

    A system stamps a whole record, not a field (OnSite; polled), so an edit it reports
    may carry the time of a later edit of another field of the same record, made before
    the bridge saw the first. While a POS or the broker is down that can be many seconds
    later than the edit, and later than an edit of the same field elsewhere: the bridge
    then rightly keeps the older value, and the checker must not fail it for something no
    bridge could tell apart. An edit no event shows (overwritten before anyone saw it)
    keeps its till time."""
    from bridge.adapters.base import ExternalRecord
    from bridge.canonical import FieldState
    from bridge.engine import customers as cust
    from bridge.store.models import Customer, InboxEvent, Link

    rt = stack.rt
    region = rt.settings.default_region
    with rt.db.session() as s:
        ext_of = {(lk.customer_id, lk.system): lk.external_id for lk in s.scalars(select(Link))}
        records = {(e.system, ext_of.get((e.customer, e.system))) for e in edits}
        seen: dict[tuple[str, str | None, str, Any], float] = {}
        for system, external_id, raw in s.execute(
            select(InboxEvent.system, InboxEvent.external_id, InboxEvent.event)
        ):
            if (system, external_id) not in records:
                continue
            data = json.loads(raw)
            if not data.get("record"):
                continue
            record = ExternalRecord.from_json(data["record"])
            occurred = data.get("occurred_at")
            at = record.updated_at or (datetime.fromisoformat(occurred) if occurred else None)
            if at is None:
                continue
            stamp = at.timestamp()
            for fld, value in cust.held_values(rt.adapter(system), record.native, region).items():
                if fld not in EDIT_FIELDS:
                    continue
                key = (system, external_id, fld, value)
                seen[key] = min(stamp, seen.get(key, stamp))
        # A push that reads its target back under a lock (OnSite) folds a till edit it finds
        # into the canonical record, dated by the record's change time, and records no inbox
        # event; the next poll reads that record unchanged and, its link knowing it already,
        # queues nothing either. The field's provenance (value, system, change time, and the
        # value it replaced) is then the only trace of that read.
        for customer_id, fields in s.execute(select(Customer.id, Customer.fields)):
            for fld in EDIT_FIELDS:
                raw_state = (fields or {}).get(fld)
                state = FieldState.from_json(raw_state) if raw_state else None
                while state is not None:
                    where = (state.source, ext_of.get((customer_id, state.source)))
                    if where in records:
                        key = (*where, fld, state.value)
                        stamp = state.at.timestamp()
                        seen[key] = min(stamp, seen.get(key, stamp))
                    state = state.replaced
    keys = {i: (e.system, ext_of.get((e.customer, e.system)), e.field, e.value) for i, e in enumerate(edits)}
    known = {i: seen.get(key, edits[i].at) for i, key in keys.items()}
    return known, {i for i, key in keys.items() if key not in seen}


def bridge_writes(stack: Stack) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Per (customer, system): when each update the bridge sent there was in flight, for
    systems without versioned writes only (one with them refuses a write over a newer edit).

    Every attempt counts, failed ones too: a write whose answer was lost did land."""
    from bridge.store.models import Attempt, Delivery

    blind = [s for s in stack.systems if Capability.VERSIONED_WRITES not in stack.classes[s].capabilities]
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with stack.rt.db.session() as s:
        for customer, target, started, ms in s.execute(
            select(Delivery.customer_id, Delivery.target, Attempt.started_at, Attempt.duration_ms)
            .join(Attempt, Attempt.delivery_id == Delivery.id)
            .where(Attempt.action == "update", Delivery.target.in_(blind))
        ):
            start = started.timestamp()
            spans.setdefault((customer, target), []).append((start, start + (ms or 0.0) / 1000))
    return spans


def overwritten_in_flight(
    edits: list[Edit], unseen: set[int], writes: dict[tuple[str, str], list[tuple[float, float]]]
) -> set[int]:
    """Edits typed at a till while a bridge update of that record was in flight, and never
    shown by any event of that system.

    Loyverse has no conditional write: the bridge reads the record, compares it with what
    it knows and writes, and a till edit landing between the read and the write is
    overwritten at the vendor. Its webhook batch (one per customer, latest state) then
    carries our write only, and so does every later read: nothing the bridge can receive
    ever shows the edit. The checker reports these apart (`overwritten_in_flight`) instead
    of failing the bridge for them; an edit some event did show is never excused."""
    hit = set()
    for i in unseen:
        e = edits[i]
        began = e.began if e.began is not None else e.at
        if any(began <= end and start <= e.at for start, end in writes.get((e.customer, e.system), [])):
            hit.add(i)
    return hit


def reordered(edits: list[Edit], known: dict[int, float]) -> int:
    by_till: dict[tuple[str, str], int] = {}
    by_known: dict[tuple[str, str], int] = {}
    for i, e in enumerate(edits):
        key = (e.customer, e.field)
        by_till[key] = i
        if key not in by_known or known[i] >= known[by_known[key]]:
            by_known[key] = i
    return sum(1 for key, i in by_till.items() if by_known[key] != i and edits[i].group is None)


def wanted(
    edits: list[Edit], known: dict[int, float]
) -> tuple[dict[tuple[str, str], Edit], dict[tuple[str, str], set[str]]]:
    """Per (customer, field): the last till edit and the values accepted as the outcome.

    That is the last edit by till time and the last by the time the bridge could know it
    (known_times), when the two differ: a push that reads a record back under its lock
    may see an OnSite edit before any poll does, with its own time, and no inbox event
    records that read, so which of the two the bridge knew is not always knowable here.
    Either way nothing older than both is accepted."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(edits):
        by_key.setdefault((e.customer, e.field), []).append(i)
    last: dict[tuple[str, str], Edit] = {}
    accept: dict[tuple[str, str], set[str]] = {}
    for key, order in by_key.items():
        accepted: set[str] = set()
        for when in (known, {i: edits[i].at for i in order}):
            newest = max(when[i] for i in order)
            winners = [edits[i] for i in order if when[i] == newest]
            # Edits of one field in two systems within the same second: either may win.
            groups = {w.group for w in winners if w.group is not None}
            accepted |= {w.value for w in winners} | {
                edits[i].value for i in order if edits[i].group is not None and edits[i].group in groups
            }
        accept[key] = accepted
        last[key] = edits[order[-1]]
    return last, accept


def lost_edits(
    stack: Stack,
    edits: list[Edit],
    known: dict[int, float] | None = None,
    excused: set[int] | None = None,
) -> list[dict[str, Any]]:
    from bridge.engine import customers as cust
    from bridge.store.models import Customer, Link

    if known is None or excused is None:
        known, unseen = known_times(stack, edits)
        excused = overwritten_in_flight(edits, unseen, bridge_writes(stack))
    kept = [i for i in range(len(edits)) if i not in excused]
    last, accept = wanted([edits[i] for i in kept], {n: known[i] for n, i in enumerate(kept)})
    rt = stack.rt
    region = rt.settings.default_region
    held: dict[str, dict[str, dict[str, Any]]] = {}
    for system in stack.writable:
        adapter = rt.adapter(system)
        held[system] = {r.external_id: cust.held_values(adapter, r.native, region) for r in read_all(adapter)}
    with rt.db.session() as s:
        canon = {
            cu.id: {k: v.get("v") for k, v in (cu.fields or {}).items()} for cu in s.scalars(select(Customer))
        }
        links = {(lk.customer_id, lk.system): lk.external_id for lk in s.scalars(select(Link))}
    lost = []
    for (customer, fld), e in last.items():
        allowed = accept[(customer, fld)]
        settled = canon.get(customer, {}).get(fld)
        if settled not in allowed:
            lost.append(
                {
                    "customer": customer,
                    "field": fld,
                    "want": sorted(allowed),
                    "from": e.system,
                    "where": "canonical",
                    "has": canon.get(customer, {}).get(fld),
                }
            )
        for system in stack.writable:
            if fld not in rt.adapter(system).fields:
                continue
            ext = links.get((customer, system))
            has = held[system].get(ext or "", {}).get(fld)
            # Every system must hold the value the canonical customer settled on.
            if has not in allowed or has != settled:
                lost.append(
                    {
                        "customer": customer,
                        "field": fld,
                        "want": sorted(allowed),
                        "from": e.system,
                        "where": system,
                        "has": has,
                    }
                )
    return lost


def idle(stack: Stack) -> bool:
    from bridge.store.models import Delivery, DeliveryState, InboxEvent, InboxState

    with stack.rt.db.session() as s:
        busy = s.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.state.in_([DeliveryState.PENDING, DeliveryState.IN_FLIGHT]))
        )
        inbox = s.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.state == InboxState.PENDING)
        )
    return not busy and not inbox


FAULTS: dict[str, dict[str, Any]] = {
    "sandbox_faults": {
        "error_rate": 0.2,
        "rate_limit_rate": 0.1,
        "lose_response_after_commit_rate": 0.05,
        "latency_ms": 50,
    },
    "webhook_storm": {"webhook_copies": 3, "webhook_jitter_ms": 1000},
}
OFF = {
    "error_rate": 0.0,
    "rate_limit_rate": 0.0,
    "lose_response_after_commit_rate": 0.0,
    "latency_ms": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_jitter_ms": 0.0,
    "webhook_copies": 1,
    "down": False,
}


class Disruptor(threading.Thread):
    """The scenario's fault, on its own clock, while the tills keep editing."""

    def __init__(self, stack: Stack, scenario: str, driver: Driver, down_s: float) -> None:
        super().__init__(daemon=True, name="chaos-disruptor")
        self.stack = stack
        self.scenario = scenario
        self.driver = driver
        self.down_s = down_s
        self.done = threading.Event()
        self.kills = 0
        self.restarts = 0
        self.down_for: float | None = None
        self.error: BaseException | None = None

    def progress(self) -> float:
        return len(self.driver.edits) / max(1, self.driver.changes)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as err:
            self.error = err

    def _run(self) -> None:
        if self.scenario == "kill_worker":
            while not self.done.wait(KILL_EVERY_S):
                self.stack.restart_worker(self.kills % len(self.stack.workers))
                self.kills += 1
        elif self.scenario == "broker_restart":
            while not self.done.wait(BROKER_RESTART_EVERY_S) or not self.restarts:
                self.stack.private.down()
                time.sleep(BROKER_DOWN_S)
                self.stack.private.up()
                self.restarts += 1
        elif self.scenario == "pos_down":
            while self.progress() < 0.25 and not self.done.wait(0.2):
                pass
            system = self.stack.writable[-1]
            self.stack.faults(system, {"down": True})
            began = time.monotonic()
            time.sleep(self.down_s)  # the tills go on; this POS's API answers 503 meanwhile
            self.stack.faults(system, {"down": False})
            self.down_for = time.monotonic() - began


def run(
    scenario: str, changes: int, broker: str, customers: int, down_s: float, seed: int, keep: bool = False
) -> Result:
    stack = Stack(broker, keep=keep)
    started = time.monotonic()
    try:
        stack.start()
        driver = Driver(stack, scenario, changes, seed)
        result = driver.result
        result.phases["start"] = time.monotonic() - started
        mark = time.monotonic()
        driver.seed_customers(customers)
        result.phases["seed"] = time.monotonic() - mark
        mark = time.monotonic()
        injected: dict[str, Any] = {}
        if scenario in FAULTS:
            for s in stack.systems:
                stack.faults(s, FAULTS[scenario])
            injected = dict(FAULTS[scenario])
        disruptor = Disruptor(stack, scenario, driver, down_s)
        disruptor.start()
        try:
            while len(driver.edits) < changes and disruptor.error is None:
                driver.step()
        finally:
            disruptor.done.set()
            disruptor.join(timeout=down_s + 120)
            for s in stack.systems:
                with contextlib.suppress(httpx.HTTPError):
                    stack.faults(s, OFF)
        if disruptor.error is not None:
            result.errors.append(f"the fault injector failed: {disruptor.error!r}")
        injected.update({"worker_kills": disruptor.kills, "broker_restarts": disruptor.restarts})
        if scenario == "pos_down":
            injected.update({"down_system": stack.writable[-1], "down_s": disruptor.down_for})
        result.faults_injected = injected
        result.changes = len(driver.edits)
        faults_off = time.monotonic()
        result.phases["drive"] = faults_off - mark
        deadline = faults_off + CONVERGE_S
        report = check(stack.rt)
        while time.monotonic() < deadline:
            if idle(stack):
                report = check(stack.rt)
                if report.converged and not lost_edits(stack, driver.edits):
                    result.convergence_s = time.monotonic() - faults_off
                    break
            time.sleep(0.5)
        report = check(stack.rt)
        result.duplicates = report.duplicates
        known, unseen = known_times(stack, driver.edits)  # one read of the whole inbox, for all three
        excused = overwritten_in_flight(driver.edits, unseen, bridge_writes(stack))
        result.lost_edits = lost_edits(stack, driver.edits, known, excused)
        result.reordered = reordered(driver.edits, known)
        result.overwritten_in_flight = [asdict(driver.edits[i]) for i in sorted(excused)]
        if not report.converged:
            result.not_converged = {
                k: v
                for k, v in report.as_dict()["systems"].items()
                if v["missing"] or v["differs"] or v["unknown"] or v["duplicates"]
            }
            result.convergence_s = None
        result.phases["converge"] = time.monotonic() - faults_off
        result.writes = {s: int(stack.call(s, "GET", "/_sandbox/stats")["writes"]) for s in stack.systems}
        result.duration_s = time.monotonic() - started
        return result
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--changes", type=int, default=2000)
    p.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    p.add_argument("--customers", type=int, default=40)
    p.add_argument("--down-seconds", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--keep", action="store_true", help="keep the run's folder (logs at INFO) and its database afterwards"
    )
    args = parser.parse_args()
    result = run(
        args.scenario, args.changes, args.broker, args.customers, args.down_seconds, args.seed, args.keep
    )
    print(json.dumps(result.as_dict(), indent=None if args.json else 2))
    sys.exit(0 if result.ok else 1)
