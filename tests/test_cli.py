"""The command line, as an operator runs it: real processes, real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, create_pg_database, drop_pg_database, service_or_skip


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "POSBRIDGE_VAR_DIR": str(tmp_path),
        "POSBRIDGE_SYSTEMS": "mema,memb",
        "POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA,tests.memorypos.adapter:MemoryB",
        "POSBRIDGE_MEMA_TOKEN": "secret-token-a",
        "POSBRIDGE_MEMB_TOKEN": "secret-token-b",
        "POSBRIDGE_OPS_PASSWORD": "hunter2-ops",
    }


def test_missing_credential_fails_at_start_naming_the_variable(env: dict[str, str]) -> None:
    del env["POSBRIDGE_MEMB_TOKEN"]
    proc = cli("status", "--json", env=env, check=False)
    assert proc.returncode == 2
    assert "POSBRIDGE_MEMB_TOKEN" in proc.stderr


def test_unknown_system_fails_at_start(env: dict[str, str]) -> None:
    env["POSBRIDGE_SYSTEMS"] = "mema,nosuchpos"
    proc = cli("status", env=env, check=False)
    assert proc.returncode == 2
    assert "nosuchpos" in proc.stderr


def test_config_show_masks_secrets(env: dict[str, str]) -> None:
    out = cli("config", "show", "--json", env=env).stdout
    values = {row["variable"]: row["value"] for row in json.loads(out)}
    assert values["POSBRIDGE_MEMA_TOKEN"] == "********"
    assert values["POSBRIDGE_OPS_PASSWORD"] == "********"
    assert "secret-token-a" not in out
    assert "hunter2-ops" not in out
    assert values["POSBRIDGE_SYSTEMS"] == ["mema", "memb"]


def test_config_reads_dotenv(env: dict[str, str], tmp_path: Path) -> None:
    workdir = tmp_path / "site"
    workdir.mkdir()
    (workdir / ".env").write_text("POSBRIDGE_DEFAULT_REGION=NZ\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "config", "show", "--json"],
        cwd=workdir,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    values = {row["variable"]: row["value"] for row in json.loads(proc.stdout)}
    assert values["POSBRIDGE_DEFAULT_REGION"] == "NZ"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_db_upgrade_status_deliveries_retry(env: dict[str, str], backend: str) -> None:
    if backend == "postgres":
        service_or_skip("Postgres", "127.0.0.1", 5432)
        env["POSBRIDGE_DATABASE_URL"] = create_pg_database()
    from alembic.script import ScriptDirectory

    from bridge.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    assert head >= "0002"
    try:
        assert f"database at revision {head}" in cli("db", "upgrade", env=env).stdout
        assert f"database at revision {head}" in cli("db", "upgrade", env=env).stdout  # idempotent
        rows = json.loads(cli("status", "--json", env=env).stdout)
        assert [r["system"] for r in rows] == ["mema", "memb"]
        assert all(r["pending"] == 0 and r["failed"] == 0 and r["paused"] is False for r in rows)
        # A failed delivery, as the engine leaves one, then retried from the CLI.
        from bridge.config import Settings
        from bridge.store.db import Database
        from bridge.store.models import Customer, Delivery, DeliveryState

        settings = Settings(
            var_dir=Path(env["POSBRIDGE_VAR_DIR"]), database_url=env.get("POSBRIDGE_DATABASE_URL", "")
        )
        database = Database(settings.db_url)
        with database.session() as s:
            s.add(Customer(id="c-1", fields={}, display_name="Ada"))
            s.flush()
            s.add(
                Delivery(
                    customer_id="c-1",
                    target="memb",
                    state=DeliveryState.FAILED,
                    attempts=12,
                    idempotency_key="k",
                    last_error="INVALID_EMAIL: email is not valid",
                )
            )
        failed = json.loads(cli("deliveries", "--failed", "--json", env=env).stdout)
        assert [(d["target"], d["last_error"]) for d in failed] == [
            ("memb", "INVALID_EMAIL: email is not valid")
        ]
        assert json.loads(cli("status", "--json", env=env).stdout)[1]["failed"] == 1
        # Retry needs a broker to hand the work to: the embedded SQLite one.
        out = json.loads(cli("retry", "--failed", "--system", "memb", env=env).stdout)
        assert out == {"requeued": [failed[0]["id"]]}
        assert json.loads(cli("deliveries", "--failed", "--json", env=env).stdout) == []
        assert cli("retry", "999", env=env, check=False).returncode == 1
        view = json.loads(cli("customer", "c-1", "--json", env=env).stdout)
        assert view["display_name"] == "Ada"
        assert view["deliveries"][0]["state"] == "pending"
    finally:
        if backend == "postgres":
            drop_pg_database(env["POSBRIDGE_DATABASE_URL"])
