"""Backfill at scale: peak memory and time of the process that links every customer.

Seeds a Fieldpine sandbox with N customers, then measures two child processes with the
kernel's own accounting (wait4 rusage): the baseline reads all N records through the
adapter and does nothing else; the bridge runs `posbridge backfill fieldpine --link-only`
(reading, matching and linking every record into SQLite). Prints one JSON document.

    python -m bench.backfill --customers 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.adapters.fieldpine.sandbox import FieldpineSandbox  # noqa: E402
from bridge.demo.processes import ServerThread  # noqa: E402

BASELINE = """
import sys
from bridge.config import load_adapter_settings
from bridge.adapters.fieldpine import FieldpineAdapter
adapter = FieldpineAdapter(load_adapter_settings("fieldpine", FieldpineAdapter.settings_model))
print(sum(1 for _ in adapter.poll(None)))
"""


def run_measured(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "output": output.decode().strip()[-400:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
