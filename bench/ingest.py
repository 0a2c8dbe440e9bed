"""Webhook ingest throughput and latency against a bare Starlette endpoint.

Both servers run as uvicorn processes with the same settings; one load generator process
sends signed webhooks (each a new event) over `--concurrency` keep-alive connections for
`--seconds`, first to the bare endpoint, then to the bridge (verify, parse, commit the
inbox row, enqueue ingest). The bridge is measured on SQLite (with its SQLite broker) and
on Postgres (with Redis). Prints one JSON document.

    python -m bench.ingest --seconds 10 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import create_pg_database, drop_pg_database, free_port, port_open  # noqa: E402
from tests.memorypos.sandbox import sign  # noqa: E402


def body_for(n: int) -> bytes:
    customer = {
        "id": f"c-{n}",
        "version": 1,
        "updated_at": datetime.now(UTC).isoformat(),
        "first_name": "Ada",
        "last_name": f"Lovelace {n}",
        "email": f"ada{n}@example.com",
        "phone": "+14155550100",
        "note": None,
        "code": None,
        "deleted": False,
    }
    return json.dumps(
        {"event_id": f"{uuid.uuid4()}", "type": "customer.updated", "customer": customer}
    ).encode()


async def _connection(
    host: str, port: int, path: str, stop: float, counter: Any, latencies: list[float], errors: list[int]
) -> None:
    """One keep-alive HTTP/1.1 connection driven by hand: the generator must not be the bottleneck."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            body = body_for(next(counter))
            head = (
                f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                f"x-memory-signature: {sign('memsecret', body)}\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status_line:
                errors.append(1)
    finally:
        writer.close()


async def load(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    parsed = httpx.URL(url)
    latencies: list[float] = []
    errors: list[int] = []
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))
    begun = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(parsed.host, parsed.port or 80, parsed.path, stop, counter, latencies, errors)
            for _ in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - begun
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


def serve(app: str, env: dict[str, str], factory: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if factory:
        argv.append("--factory")
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{app} did not start")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/webhooks/mema"


def measure(app: str, env: dict[str, str], args: argparse.Namespace, factory: bool = False) -> dict[str, Any]:
    proc, url = serve(app, env, factory)
    try:
        asyncio.run(load(url, min(2.0, args.seconds), args.concurrency))  # warm-up
        return asyncio.run(load(url, args.seconds, args.concurrency))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def bridge_env(var: Path, database_url: str, broker_url: str) -> dict[str, str]:
    return {
        "POSBRIDGE_VAR_DIR": str(var),
        "POSBRIDGE_DATABASE_URL": database_url,
        "POSBRIDGE_BROKER_URL": broker_url,
        "POSBRIDGE_SYSTEMS": "mema",
        "POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA",
        "POSBRIDGE_MEMA_TOKEN": "bench",
        "POSBRIDGE_MEMA_BASE_URL": "http://127.0.0.1:9",
        "POSBRIDGE_LOG_LEVEL": "WARNING",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "webhook ingest",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "results": {},
    }
    result["results"]["bare_starlette"] = measure("bench.apps:bare", {}, args)
    bare_rps = result["results"]["bare_starlette"]["rps"]
    for backend in args.backends.split(","):
        var = Path(tempfile.mkdtemp(prefix="posbridge-bench-"))
        if backend == "sqlite":
            env = bridge_env(var, f"sqlite:///{var}/posbridge.sqlite", f"sqla+sqlite:///{var}/broker.sqlite")
            cleanup = None
        else:
            db = create_pg_database()
            env = bridge_env(var, db, "redis://127.0.0.1:6379/3")
            cleanup = db
        try:
            figures = measure("bench.apps:bridge", env, args, factory=True)
        finally:
            if cleanup:
                drop_pg_database(cleanup)
        figures["ratio_to_bare"] = round(figures["rps"] / bare_rps, 3) if bare_rps else None
        figures["meets_target"] = bool(
            figures["ratio_to_bare"] and figures["ratio_to_bare"] >= 0.5 and figures["p99_ms"] < 25
        )
        result["results"][f"bridge_{backend}"] = figures
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
