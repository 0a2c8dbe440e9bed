"""`posbridge`: run, inspect and repair the bridge.

Every listing prints a Rich table in a terminal and JSON with `--json` (or when piped).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bridge.config import ConfigError, Settings, effective_config, get_settings

console = Console(stderr=False)


def _runtime() -> Any:
    from bridge import logs
    from bridge.runtime import get_runtime

    settings = get_settings()
    rt = get_runtime()
    rt.validate()
    logs.configure(settings.log_level, json_lines=settings.log_json, secrets=logs.all_secrets(rt))
    return rt


def _emit(rows: list[dict[str, Any]], as_json: bool, title: str, columns: list[str] | None = None) -> None:
    if as_json or not sys.stdout.isatty():
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=title)
    columns = columns or (list(rows[0]) if rows else [])
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


@click.group()
@click.version_option(package_name="posbridge")
def main() -> None:
    """posbridge keeps customers in step across Square, Loyverse, Fieldpine, OnSite and LS One."""


# -- running --------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="bind address (POSBRIDGE_WEB_HOST)")
@click.option("--port", default=None, type=int, help="port (POSBRIDGE_WEB_PORT)")
def web(host: str | None, port: int | None) -> None:
    """Run the web app (webhooks, triggers, health, ops page)."""
    import uvicorn

    from bridge.web.app import create_app

    rt = _runtime()
    settings: Settings = rt.settings
    rt.db.upgrade()
    uvicorn.run(
        create_app(rt),
        host=host or settings.web_host,
        port=port or settings.web_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def _metrics_dir(settings: Settings) -> None:
    """Prefork children share one metrics directory, which must exist (and be empty of a
    previous run) before Python starts, hence set here rather than in the worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import shutil

    directory = settings.var_dir / "metrics" / f"worker-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _worker_argv(settings: Settings, *, beat: bool, queues: str | None, concurrency: int | None) -> list[str]:
    from workers.app import queues_for

    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-Q",
        queues or ",".join(queues_for(settings)),
        "-c",
        str(concurrency or settings.worker_concurrency),
        "--loglevel",
        settings.log_level,
    ]
    if beat:
        argv += ["-B", "-s", str(settings.var_dir / "celerybeat-schedule")]
    return argv


@main.command()
@click.option("--queues", "-Q", default=None, help="comma-separated queues (default: all)")
@click.option("--concurrency", "-c", default=None, type=int)
@click.option("--beat/--no-beat", default=False, help="embed beat (one machine only)")
def worker(queues: str | None, concurrency: int | None, beat: bool) -> None:
    """Run a Celery worker."""
    rt = _runtime()
    rt.db.upgrade()
    _metrics_dir(rt.settings)
    os.execv(sys.executable, _worker_argv(rt.settings, beat=beat, queues=queues, concurrency=concurrency))


@main.command()
@click.option("--port", default=None, type=int, help="port (POSBRIDGE_FLOWER_PORT)")
@click.option("--address", default="127.0.0.1")
def flower(port: int | None, address: str) -> None:
    """Run Flower on the same broker, behind basic auth (POSBRIDGE_FLOWER_BASIC_AUTH=user:password).

    Failed deliveries are rows, not failed tasks, so retry them from Flower by applying
    `posbridge.retry_delivery` (args: [delivery_id]) or `posbridge.retry_failed`
    (args: [system]) through its task API; see the README for the exact call.
    """
    rt = _runtime()
    auth = rt.settings.flower_basic_auth
    if auth is None or ":" not in auth.get_secret_value():
        raise click.ClickException("set POSBRIDGE_FLOWER_BASIC_AUTH=user:password; Flower never runs open")
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "flower",
        f"--port={port or rt.settings.flower_port}",
        f"--address={address}",
        f"--basic-auth={auth.get_secret_value()}",
    ]
    os.execv(sys.executable, argv)


@main.command()
def beat() -> None:
    """Run Celery beat (exactly one per deployment)."""
    rt = _runtime()
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "beat",
        "--loglevel",
        rt.settings.log_level,
        "-s",
        str(rt.settings.var_dir / "celerybeat-schedule"),
    ]
    os.execv(sys.executable, argv)


@main.command()
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
def serve(host: str | None, port: int | None) -> None:
    """Web, worker and beat together, for one machine."""
    rt = _runtime()
    rt.db.upgrade()
    settings: Settings = rt.settings
    _metrics_dir(settings)
    procs = [
        subprocess.Popen(_worker_argv(settings, beat=True, queues=None, concurrency=None)),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge.cli",
                "web",
                "--host",
                host or settings.web_host,
                "--port",
                str(port or settings.web_port),
            ]
        ),
    ]
    click.echo(
        f"posbridge serving on http://{host or settings.web_host}:{port or settings.web_port}", err=True
    )

    def stop(*_: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        stop()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    sys.exit(max((p.returncode or 0) for p in procs))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations (idempotent)."""
    from bridge.store.migrate import current, upgrade

    settings = get_settings()
    upgrade(settings.db_url)
    click.echo(f"database at revision {current(settings.db_url)}")


# -- inspecting -----------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Per system: linked customers, pending/failed deliveries, paused, poll lag."""
    from bridge.ops.status import system_status

    rows = system_status(_runtime())
    _emit(
        rows,
        as_json,
        "posbridge status",
        ["system", "linked", "pending", "failed", "inbox_pending", "paused", "paused_reason", "poll_lag_s"],
    )


@main.command()
@click.option("--failed", is_flag=True, help="only failed deliveries")
@click.option("--state", default=None, help="pending | in_flight | done | failed | superseded")
@click.option("--system", default=None)
@click.option("--limit", default=100, type=int)
@click.option("--json", "as_json", is_flag=True)
def deliveries(failed: bool, state: str | None, system: str | None, limit: int, as_json: bool) -> None:
    """List deliveries, newest first."""
    from bridge.ops.status import delivery_rows

    rows = delivery_rows(_runtime(), state="failed" if failed else state, system=system, limit=limit)
    _emit(rows, as_json, "deliveries", ["id", "customer", "target", "state", "attempts", "last_error"])


@main.command()
@click.argument("delivery_id", required=False, type=int)
@click.option("--failed", is_flag=True, help="every failed delivery")
@click.option("--system", default=None, help="with --failed: only this target")
def retry(delivery_id: int | None, failed: bool, system: str | None) -> None:
    """Re-queue one failed delivery, or all of them."""
    from workers.tasks import retry_deliveries

    if (delivery_id is None) == (not failed):
        raise click.UsageError("give a delivery id or --failed")
    revived = retry_deliveries(_runtime(), delivery_id=delivery_id, system=system)
    click.echo(json.dumps({"requeued": revived}))
    if delivery_id is not None and not revived:
        sys.exit(1)


@main.command()
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True)
def customer(customer_id: str, as_json: bool) -> None:
    """One customer: fields with provenance, links, deliveries, orders."""
    from bridge.ops.status import customer_view

    view = customer_view(_runtime(), customer_id)
    if view is None:
        raise click.ClickException(f"no customer {customer_id}")
    if as_json or not sys.stdout.isatty():
        click.echo(json.dumps(view, indent=2, default=str))
        return
    console.print(
        f"[bold]{view['display_name']}[/bold] {view['id']}" + (" (deleted)" if view["deleted"] else "")
    )
    fields = [{"field": k, **v} for k, v in view["fields"].items()]
    _emit(fields, False, "fields", ["field", "value", "source", "at"])
    _emit(view["links"], False, "links", ["system", "external_id", "version", "synced_at"])
    _emit(view["deliveries"], False, "deliveries", ["id", "target", "state", "attempts", "last_error"])
    _emit(view["orders"], False, "orders", ["system", "id", "reference", "status"])


@main.group()
def config() -> None:
    """Configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
def config_show(as_json: bool) -> None:
    """The effective configuration, secrets masked."""
    from bridge.runtime import Runtime

    settings = get_settings()
    rt = Runtime(settings)
    adapters = {system: rt.adapter_settings(system) for system in rt.systems}
    values = effective_config(settings, adapters)
    rows = [{"variable": k, "value": v} for k, v in values.items()]
    _emit(rows, as_json, "effective configuration", ["variable", "value"])


@main.command()
@click.argument("system")
@click.option("--dry-run", is_flag=True, help="report what would be linked and created; change nothing")
@click.option(
    "--link-only", is_flag=True, help="link and match only; plan no writes (backfill several systems first)"
)
@click.option("--chunk", default=200, type=int, show_default=True, help="records linked per transaction")
@click.option("--json", "as_json", is_flag=True)
def backfill(system: str, dry_run: bool, link_only: bool, chunk: int, as_json: bool) -> None:
    """Bring every existing customer of SYSTEM under the bridge, then create the rest elsewhere.

    Safe to interrupt and re-run: linking is idempotent and writes are coalesced per
    customer and target, so a second run finishes the first without a duplicate.
    """
    from dataclasses import asdict

    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bridge.engine import backfill as bf

    rt = _runtime()
    if system not in rt.systems:
        raise click.BadParameter(f"{system!r} is not enabled (POSBRIDGE_SYSTEMS)")
    if dry_run:
        report = bf.dry_run(rt, system)
        click.echo(json.dumps(asdict(report), indent=2))
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} records · {task.fields[rate]:.0f}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    total = rt.adapter(system).estimate_total()
    with Progress(*columns, console=Console(stderr=True), disable=as_json) as progress:
        task = progress.add_task(f"reading {system}", total=total, rate=0.0)
        started = time.monotonic()

        def advance(n: int) -> None:
            done = progress.tasks[0].completed + n
            progress.update(task, advance=n, rate=done / max(1e-6, time.monotonic() - started))

        report = bf.link_system(rt, system, progress=advance, chunk_size=chunk)
        if not link_only:
            progress.update(task, description="planning writes elsewhere")
            report.planned = bf.plan_all(rt)
    out = asdict(report)
    click.echo(
        json.dumps(out, indent=2)
        if as_json
        else f"{system}: {report.read} read, {report.outcomes}, {report.planned} writes queued"
    )


@main.command()
@click.option("--customers", default=24, type=int, show_default=True, help="people seeded across the tills")
@click.option("--seconds", default=30.0, type=float, show_default=True, help="length of the till activity")
@click.option("--faults", type=click.Choice(["off", "light", "heavy"]), default="light", show_default=True)
@click.option("--seed", default=None, type=int, help="random seed, for a repeatable run")
@click.option("--keep", is_flag=True, help="keep the demo's var dir (database, logs)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def demo(customers: int, seconds: float, faults: str, seed: int | None, keep: bool, as_json: bool) -> None:
    """Five POS sandboxes and the bridge on the embedded default, with live till activity."""
    from bridge.demo.run import Options, run

    sys.exit(
        run(
            Options(
                customers=customers, seconds=seconds, faults=faults, as_json=as_json, seed=seed, keep=keep
            )
        )
    )


# -- sandboxes ------------------------------------------------------------------------------
@main.command()
@click.argument("system")
@click.option("--port", default=8100, type=int)
@click.option("--host", default="127.0.0.1")
@click.option("--webhook-url", default=None, help="where the sandbox sends its webhooks")
@click.option("--token", "tokens", multiple=True, help="accept only these credentials")
def sandbox(system: str, port: int, host: str, webhook_url: str | None, tokens: tuple[str, ...]) -> None:
    """Run one POS simulator on a port."""
    import uvicorn

    from bridge.adapters import registry

    classes = registry.available(get_settings().extra_adapters)
    if system not in classes or not classes[system].sandbox_class:
        raise click.BadParameter(f"no sandbox for {system!r}; known: {sorted(classes)}")
    cls = registry.load_object(classes[system].sandbox_class or "")
    instance = cls(webhook_url=webhook_url, tokens=list(tokens) or None)
    click.echo(f"{system} sandbox on http://{host}:{port} (control API under /_sandbox/)", err=True)
    uvicorn.run(instance.app, host=host, port=port, log_level="warning")


def run() -> None:
    try:
        main()
    except ConfigError as err:
        click.echo(f"configuration error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
