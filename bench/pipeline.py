"""Pipeline throughput, latency and write efficiency through five sandboxes.

Postgres + Redis, the web app as its own uvicorn process, two Celery worker processes
(one with beat), the five POS sandboxes in this process (the outside world). Next to it,
the same broker and two worker processes running a bare Celery no-op task.

Prints one JSON document:
- peak: N customers created at the Square till, fully propagated to every other system
  that accepts writes; changes/s and Celery tasks/s, and tasks/s / bare no-op tasks/s;
- latency: edits to distinct customers at half the peak rate; from the webhook's
  arrival to the last target write, p50/p99;
- writes: per propagated change per target against the documented minimum, echoes,
  and a burst of edits to one customer inside the coalescing window.

    python -m bench.pipeline --customers 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.adapters import registry  # noqa: E402
from bridge.adapters.base import Capability  # noqa: E402
from bridge.demo.processes import ServerThread, WorkerProcess, free_port, port_open, wait_for  # noqa: E402
from tests.harness import create_pg_database, drop_pg_database  # noqa: E402

REDIS = "redis://127.0.0.1:6379"


def bare_celery(tasks: int, workers: int) -> dict[str, Any]:
    db = 14
    counter_db = 13
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_BROKER_URL": f"{REDIS}/{db}",
        "BENCH_REDIS_URL": f"{REDIS}/{counter_db}",
        "BENCH_COUNTER": f"bench:noop:{secrets.token_hex(4)}",
    }
    counter = redis.Redis.from_url(env["BENCH_REDIS_URL"])
    redis.Redis.from_url(env["BENCH_BROKER_URL"]).flushdb()
    var = Path(tempfile.mkdtemp(prefix="posbridge-bench-noop-"))
    procs = []
    for n in range(workers):
        log = (var / f"noop-{n}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.noop_app",
                    "worker",
                    "-c",
                    "1",
                    "--loglevel",
                    "INFO",
                    "-n",
                    f"noop{n}-{secrets.token_hex(3)}@%h",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        wait_for(
            lambda: all(b"ready." in (var / f"noop-{n}.log").read_bytes() for n in range(workers)),
            timeout=120,
            what="noop workers",
        )
        from celery import Celery

        sender = Celery("bench_noop", broker=env["BENCH_BROKER_URL"])
        started = time.perf_counter()
        for i in range(tasks):
            sender.send_task("bench.noop", args=[i])
        wait_for(
            lambda: int(counter.get(env["BENCH_COUNTER"]) or 0) >= tasks,
            timeout=600,
            interval=0.05,
            what="noop tasks",
        )
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(var, ignore_errors=True)
    return {"tasks": tasks, "seconds": round(elapsed, 2), "tasks_per_s": round(tasks / elapsed, 1)}


class Bridge:
    def __init__(self, var: Path) -> None:
        self.var = var
        self.db_url = create_pg_database()
        self.classes = {n: c for n, c in registry.available().items() if c.sandbox_class}
        self.writable = [
            s
            for s, c in self.classes.items()
            if Capability.CREATE in c.capabilities and Capability.READ_ONLY not in c.capabilities
        ]
        web_port = free_port()
        self.web_url = f"http://127.0.0.1:{web_port}"
        tokens = {s: secrets.token_urlsafe(8) for s in self.classes}
        self.sandboxes = {
            s: registry.load_object(c.sandbox_class or "").for_demo(
                f"{self.web_url}/webhooks/{s}/{tokens[s]}"
            )
            for s, c in self.classes.items()
        }
        self.servers = {s: ServerThread(sb.app).start() for s, sb in self.sandboxes.items()}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "POSBRIDGE_VAR_DIR": str(var),
                "POSBRIDGE_DATABASE_URL": self.db_url,
                "POSBRIDGE_BROKER_URL": f"{REDIS}/{secrets.randbelow(10) + 1}",
                "POSBRIDGE_QUEUE_PREFIX": f"bench{secrets.token_hex(3)}.",
                "POSBRIDGE_SYSTEMS": ",".join(self.classes),
                "POSBRIDGE_LOG_LEVEL": "WARNING",
                "POSBRIDGE_COALESCE_WINDOW_S": "0.3",
            }
        )
        for s, sb in self.sandboxes.items():
            prefix = f"POSBRIDGE_{s.upper()}_"
            pushed = Capability.WEBHOOKS in self.classes[s].capabilities
            self.env[prefix + "WEBHOOK_PATH_TOKEN"] = tokens[s]
            self.env[prefix + "POLL_INTERVAL_S"] = "600" if pushed else "1"
            self.env[prefix + "POLL_OVERLAP_S"] = "5"
            for key, value in sb.adapter_env(self.servers[s].url).items():
                self.env[prefix + key.upper()] = value
        # Loyverse's account budget would be the bottleneck, not the pipeline: lift it here.
        for sb in self.sandboxes.values():
            sb.set_faults({"rate_limit_requests": None})
        self.env["POSBRIDGE_LOYVERSE_RATE_LIMIT_REQUESTS"] = "1000000"
        subprocess.run(
            [sys.executable, "-m", "bridge.cli", "db", "upgrade"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.web = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "web", "--port", str(web_port)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", web_port), timeout=60, what="web")
        self.workers = [
            WorkerProcess(self.env, var / f"worker-{n}.log", concurrency=1, beat=(n == 0)).start()
            for n in range(2)
        ]
        from sqlalchemy import create_engine

        self.engine = create_engine(self.db_url.replace("postgresql://", "postgresql+psycopg://"))

    def sql(self, query: str) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(query)).all())

    def idle(self) -> bool:
        pending = self.sql("select count(*) from deliveries where state in ('pending','in_flight')")[0][0]
        inbox = self.sql("select count(*) from inbox where state = 'pending'")[0][0]
        hooks = sum(sb.webhooks.pending for sb in self.sandboxes.values())
        return pending == 0 and inbox == 0 and hooks == 0

    def till(self, system: str, fields: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.servers[system].url}/_sandbox/edit", json={"id": record_id, "fields": fields}, timeout=30
        )
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def stats(self, system: str) -> dict[str, Any]:
        return httpx.get(f"{self.servers[system].url}/_sandbox/stats", timeout=30).json()  # type: ignore[no-any-return]

    def count(self, system: str) -> int:
        return int(httpx.get(f"{self.servers[system].url}/_sandbox/customers", timeout=60).json()["count"])

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.web.terminate()
        self.web.wait(timeout=30)
        for server in self.servers.values():
            server.stop()
        self.engine.dispose()
        drop_pg_database(self.db_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="posbridge-bench-pipeline-"))
    out: dict[str, Any] = {
        "benchmark": "pipeline through five sandboxes (Postgres + Redis, two worker processes)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    bridge = Bridge(var)
    try:
        source = "square"
        targets = [s for s in bridge.writable if s != source]
        n = args.customers
        # -- peak: creates at the source till, propagated everywhere --------------------
        started = time.perf_counter()
        ids = []
        for i in range(n):
            ids.append(
                bridge.till(
                    source,
                    {
                        "given_name": f"Peak{i}",
                        "family_name": "Bench",
                        "email_address": f"peak{i}@example.com",
                    },
                )["id"]
            )
        wait_for(
            lambda: all(bridge.count(t) >= n for t in targets) and bridge.idle(),
            timeout=900,
            interval=0.5,
            what="propagation",
        )
        elapsed = time.perf_counter() - started
        inbox = bridge.sql("select count(*) from inbox")[0][0]
        pushes = bridge.sql("select count(*) from attempts where action <> 'lookup'")[0][0]
        noops = bridge.sql("select count(*) from deliveries where state = 'superseded'")[0][0]
        tasks = inbox + pushes + noops
        writes = {t: bridge.stats(t)["writes"] for t in targets}
        out["peak"] = {
            "changes": n,
            "seconds": round(elapsed, 1),
            "changes_per_s": round(n / elapsed, 2),
            "celery_tasks": tasks,
            "tasks_per_s": round(tasks / elapsed, 1),
        }
        out["writes_per_create_per_target"] = {t: round(writes[t] / n, 3) for t in targets}
        # -- latency at half the peak rate: edits to distinct customers -----------------
        rate = max(0.5, n / elapsed / 2)
        before = {t: bridge.stats(t) for t in targets}
        marker = bridge.sql("select coalesce(max(id), 0) from inbox")[0][0]
        edits = 0
        begin = time.perf_counter()
        while time.perf_counter() - begin < args.latency_seconds:
            bridge.till(source, {"note": f"latency {edits}"}, ids[edits % n])
            edits += 1
            time.sleep(max(0.0, begin + edits / rate - time.perf_counter()))
        wait_for(bridge.idle, timeout=300, interval=0.5, what="latency phase to drain")
        rows = bridge.sql(f"""
            select i.id, extract(epoch from (max(a.started_at + a.duration_ms * interval '1 millisecond')
                                             - i.received_at))
            from inbox i join deliveries d on d.correlation_id = i.correlation_id
                         join attempts a on a.delivery_id = d.id and a.outcome = 'ok'
            where i.id > {marker} and i.system = '{source}' and i.outcome = 'updated'
            group by i.id, i.received_at""")
        latencies = sorted(float(r[1]) for r in rows)
        after = {t: bridge.stats(t) for t in targets}

        def pct(p: float) -> float:
            return (
                round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)
                if latencies
                else 0.0
            )

        out["latency"] = {
            "rate_per_s": round(rate, 2),
            "edits": edits,
            "measured": len(latencies),
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        }
        out["writes_per_update_per_target"] = {
            t: round((after[t]["writes"] - before[t]["writes"]) / edits, 3) for t in targets
        }
        onsite = (
            {
                k: after["onsite"]["requests"].get(k, 0) - before["onsite"]["requests"].get(k, 0)
                for k in (
                    "LOCK /api/customers/{id:int}/",
                    "PUT /api/customers/{id:int}/",
                    "UNLOCK /api/customers/{id:int}/",
                )
            }
            if "onsite" in targets
            else {}
        )
        out["onsite_requests_per_update"] = {k.split()[0]: round(v / edits, 3) for k, v in onsite.items()}
        # -- a burst of edits to one customer inside the coalescing window ---------------
        before = {t: bridge.stats(t)["writes"] for t in targets}
        # One kept-alive connection: ten new connections alone took longer than the window.
        with httpx.Client(base_url=bridge.servers[source].url, timeout=30) as till:
            burst_started = time.perf_counter()
            for i in range(10):
                edit = {"id": ids[0], "fields": {"note": f"burst {i}"}}
                till.post("/_sandbox/edit", json=edit).raise_for_status()
            out["burst_till_edits_span_ms"] = round((time.perf_counter() - burst_started) * 1000, 1)
        time.sleep(2)
        wait_for(bridge.idle, timeout=120, interval=0.5, what="burst to drain")
        out["burst_of_10_edits_writes_per_target"] = {
            t: bridge.stats(t)["writes"] - before[t] for t in targets
        }
        echo_writes = sum(bridge.stats(s)["writes"] for s in [source]) - n - edits - 10
        out["echo_writes_back_to_source"] = echo_writes
    finally:
        bridge.close()
        shutil.rmtree(var, ignore_errors=True)
    out["bare_celery"] = bare_celery(max(1000, out["peak"]["celery_tasks"]), workers=2)
    out["tasks_ratio_to_bare"] = round(out["peak"]["tasks_per_s"] / out["bare_celery"]["tasks_per_s"], 3)
    out["targets"] = {
        "tasks_ratio": ">= 0.5",
        "latency_p99_ms": "< 1000",
        "writes_per_change": 1,
        "echo_writes": 0,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
