"""Backfill at scale: peak memory, time and write counts.

Two modes, each printing one JSON document:

- link (default): seeds a Fieldpine sandbox with N customers, then measures two child
  processes by their own peak RSS (VmHWM, sampled from /proc): the baseline reads all N
  records through the adapter and does nothing else; the bridge runs
  `posbridge backfill fieldpine --link-only` (reading, matching and linking every record
  into SQLite).

      python -m bench.backfill --customers 100000

- full: the whole product on Postgres + Redis (web, two workers with beat, the five
  sandboxes each in its own process, as `python -m chaos` runs them); N Fieldpine
  customers are backfilled into Square (bulk endpoint), Loyverse and OnSite until every
  delivery is done. Reports wall time per phase, the peak RSS of the backfill process and
  of every worker process (VmHWM sampled from /proc), Square calls against N/100, and the
  customers each system ends with (duplicates would show as more than N).

      python -m bench.backfill --customers 100000 --full
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.adapters.fieldpine.sandbox import FieldpineSandbox  # noqa: E402
from bridge.demo.processes import ServerThread, wait_for  # noqa: E402

BASELINE = """
import sys
from bridge.config import load_adapter_settings
from bridge.adapters.fieldpine import FieldpineAdapter
adapter = FieldpineAdapter(load_adapter_settings("fieldpine", FieldpineAdapter.settings_model))
print(sum(1 for _ in adapter.poll(None)))
"""


def run_measured(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a child and report its own peak RSS.

    Not `wait4`'s ru_maxrss: Linux carries the parent's high-water mark across fork and
    exec into it, so a child of this (large) process would report at least our size. The
    child's own VmHWM, sampled from /proc until it exits, is its peak alone.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _hwm_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, errors = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {errors.decode()[-2000:]}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak[0], 1),
        "output": output.decode().strip()[-400:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--full", action="store_true", help="link and push into Square, Loyverse, OnSite")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds to wait for the drain")
    args = parser.parse_args()
    if args.full:
        print(json.dumps(full(args.customers, args.timeout), indent=2))
        return
    var = Path(tempfile.mkdtemp(prefix="posbridge-bench-backfill-"))
    sandbox = FieldpineSandbox()
    server = ServerThread(sandbox.app).start()
    try:
        seeded = httpx.post(f"{server.url}/_sandbox/seed", json={"count": args.customers}, timeout=600)
        seeded.raise_for_status()
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "POSBRIDGE_VAR_DIR": str(var),
                "POSBRIDGE_SYSTEMS": "fieldpine",
                "POSBRIDGE_LOG_LEVEL": "WARNING",
                "POSBRIDGE_FIELDPINE_TIMEOUT_S": "60",
            }
        )
        for key, value in sandbox.adapter_env(server.url).items():
            env[f"POSBRIDGE_FIELDPINE_{key.upper()}"] = value
        baseline = run_measured([sys.executable, "-c", BASELINE], env)
        subprocess.run(
            [sys.executable, "-m", "bridge.cli", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        bridge = run_measured(
            [sys.executable, "-m", "bridge.cli", "backfill", "fieldpine", "--link-only", "--json"], env
        )
        text = bridge["output"]
        bridge["output"] = json.loads(text[text.index("{") :]) if "{" in text else None
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "benchmark": "backfill (link phase) of Fieldpine customers",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "customers": args.customers,
                "baseline_read_only": baseline,
                "bridge_backfill": bridge,
                "rss_ratio": round(bridge["peak_rss_mb"] / baseline["peak_rss_mb"], 2),
                "records_per_s": round(args.customers / bridge["wall_s"], 1),
                "meets_target_rss_under_300mb": bridge["peak_rss_mb"] < 300,
            },
            indent=2,
        )
    )


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(os.getpgid(pid))], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakSampler(threading.Thread):
    """Peak RSS (the kernel's high-water mark) of every process in some process groups."""

    def __init__(self, leaders: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.leaders = leaders
        self.peaks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for name, leader in self.leaders.items():
                with contextlib.suppress(ProcessLookupError, OSError):
                    for pid in _tree(leader):
                        key = f"{name}/{pid}"
                        self.peaks[key] = max(self.peaks.get(key, 0.0), _hwm_mb(pid))


class Progress(threading.Thread):
    """A line a minute on stderr, so that a run cut short still shows its pace."""

    def __init__(self, stack: Any, sampler: PeakSampler, every: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.sampler = sampler
        self.every = every
        self.stop = threading.Event()
        self.started = time.perf_counter()
        self.backfill_peak_mb = 0.0

    def run(self) -> None:
        from sqlalchemy import func, select

        from bridge.store.models import Delivery, InboxEvent

        ticks = 0
        while not self.stop.wait(1.0):
            # The backfill command's own peak, sampled here too: run_measured's figure is
            # only printed when the command ends.
            found = subprocess.run(
                ["pgrep", "-f", "bridge.cli backfill"], capture_output=True, text=True, check=False
            )
            for pid in found.stdout.split():
                self.backfill_peak_mb = max(self.backfill_peak_mb, _hwm_mb(int(pid)))
            ticks += 1
            if ticks % int(self.every):
                continue
            with contextlib.suppress(Exception):
                with self.stack.rt.db.session() as session:
                    states = dict(
                        session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
                    )
                    by_state = select(InboxEvent.state, func.count()).group_by(InboxEvent.state)
                    inbox = dict(session.execute(by_state).all())
                stats = {
                    s: self.stack.call(s, "GET", "/_sandbox/stats") for s in ("square", "loyverse", "onsite")
                }
                line = {
                    "elapsed_s": round(time.perf_counter() - self.started, 1),
                    "deliveries": {str(k): v for k, v in states.items()},
                    "inbox": {str(k): v for k, v in inbox.items()},
                    "writes": {s: v["writes"] for s, v in stats.items()},
                    "square_bulk_calls": stats["square"]["requests"].get("POST /v2/customers/bulk-create", 0),
                    "peak_rss_mb": {
                        "backfill_process": round(self.backfill_peak_mb, 1),
                        "workers_max": round(max(self.sampler.peaks.values(), default=0.0), 1),
                    },
                }
                print(json.dumps(line), file=sys.stderr, flush=True)


def full(customers: int, timeout: float) -> dict[str, Any]:
    from sqlalchemy import func, select

    from bridge.adapters.base import AdapterSettings
    from bridge.adapters.registry import ADAPTERS
    from bridge.store.models import Attempt, Delivery, Link
    from chaos.run import Stack, idle

    # The chaos stack polls every second with a 10 s overlap so that its runs converge
    # fast; a backfill measured that way would spend most of its time re-reading OnSite's
    # overlap window (about ten full reads per created record). It runs on the product's
    # own polling settings instead.
    fields = ("poll_interval_s", "poll_overlap_s")
    defaults = {name: AdapterSettings.model_fields[name].default for name in fields}
    polling = {
        f"POSBRIDGE_{system.upper()}_{name.upper()}": str(value)
        for system in ADAPTERS
        for name, value in defaults.items()
    }
    stack = Stack(
        "redis",
        extra_env={
            # Loyverse's account budget (300 requests per 300 s) would make this a 28-hour
            # run that measures the budget, not the bridge: it is lifted on both sides.
            "POSBRIDGE_LOYVERSE_RATE_LIMIT_REQUESTS": "100000000",
            "POSBRIDGE_LOG_LEVEL": "WARNING",
            "POSBRIDGE_MAX_ATTEMPTS": "12",
            **polling,
        },
    )
    out: dict[str, Any] = {
        "benchmark": "full backfill of Fieldpine customers into Square, Loyverse and OnSite",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "customers": customers,
        "stack": "Postgres + Redis, web, 2 workers x 2 processes, beat, 5 sandbox processes",
        "polling_s": defaults,
    }
    try:
        stack.start()
        stack.faults("loyverse", {"rate_limit_requests": None})
        seeded = stack.call("fieldpine", "POST", "/_sandbox/seed", json={"count": customers})
        out["seed_s"] = seeded.get("seconds")
        before = {s: stack.call(s, "GET", "/_sandbox/stats") for s in ("square", "loyverse", "onsite")}
        sampler = PeakSampler({f"worker{n}": w.proc.pid for n, w in enumerate(stack.workers) if w.proc})
        sampler.start()
        progress = Progress(stack, sampler)
        progress.start()
        env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        backfill = run_measured([sys.executable, "-m", "bridge.cli", "backfill", "fieldpine", "--json"], env)
        text = backfill["output"]
        backfill["output"] = json.loads(text[text.index("{") :]) if "{" in text else None
        queued = time.perf_counter()
        wait_for(lambda: idle(stack), timeout=timeout, interval=2.0, what="every delivery done")
        drained = time.perf_counter()
        sampler.stop.set()
        sampler.join()
        progress.stop.set()
        progress.join()
        after = {s: stack.call(s, "GET", "/_sandbox/stats") for s in ("square", "loyverse", "onsite")}
        counts = {
            s: stack.call(s, "GET", "/_sandbox/customers")["count"] for s in ("square", "loyverse", "onsite")
        }
        with stack.rt.db.session() as session:
            states = dict(
                session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
            )
            linked = dict(
                session.execute(
                    select(Link.system, func.count()).where(Link.synced_at.is_not(None)).group_by(Link.system)
                ).all()
            )
            attempts = session.scalar(select(func.count()).select_from(Attempt))
            by_action = session.execute(
                select(Delivery.target, Attempt.action, Attempt.outcome, func.count())
                .join(Delivery, Delivery.id == Attempt.delivery_id)
                .group_by(Delivery.target, Attempt.action, Attempt.outcome)
            ).all()

        def calls(system: str, *names: str) -> int:
            reqs_after = after[system]["requests"]
            reqs_before = before[system]["requests"]
            return sum(reqs_after.get(n, 0) - reqs_before.get(n, 0) for n in names)

        square_bulk = calls("square", "POST /v2/customers/bulk-create")
        square_single = calls("square", "POST /v2/customers", "PUT /v2/customers/{customer_id}")
        workers = sorted(sampler.peaks.items(), key=lambda kv: -kv[1])
        out.update(
            {
                "wall_s": {
                    "backfill_command": round(queued - started, 1),
                    "drain_after_command": round(drained - queued, 1),
                    "total": round(drained - started, 1),
                },
                "backfill_process": backfill,
                "worker_processes_peak_rss_mb": {k: round(v, 1) for k, v in workers},
                "peak_rss_mb_max": round(max([backfill["peak_rss_mb"], *(v for _, v in workers)]), 1),
                "square_calls": {
                    "bulk_create": square_bulk,
                    "single_writes": square_single,
                    "total_writes": square_bulk + square_single,
                    "target_max": round(1.01 * customers / 100, 1),
                },
                "writes": {s: after[s]["writes"] - before[s]["writes"] for s in after},
                "requests_total": {
                    s: after[s]["requests_total"] - before[s]["requests_total"] for s in after
                },
                "customers_after": counts,
                "links": linked,
                "deliveries": {str(k): v for k, v in states.items()},
                "attempts": attempts,
                "attempts_by_target": {
                    f"{t} {a} {o}": n for t, a, o, n in sorted(by_action, key=lambda r: (r[0], r[1], r[2]))
                },
                "vendor_faults": {s: after[s].get("faults", {}) for s in after},
                "records_per_s_end_to_end": round(customers / (drained - started), 1),
                "meets_target_rss_under_300mb": max([backfill["peak_rss_mb"], *(v for _, v in workers)])
                < 300,
                "meets_target_square_calls": square_bulk + square_single <= 1.01 * customers / 100,
            }
        )
        return out
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
