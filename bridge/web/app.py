"""The Starlette application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import metrics
from bridge.runtime import Runtime, get_runtime
from bridge.web.batcher import InboxBatcher
from bridge.web.openapi import openapi_endpoint
from bridge.web.ops import ops_mount
from bridge.web.webhooks import receive_webhook, trigger_poll


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime

    def check() -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            with rt.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            out["database"] = "ok"
        except Exception as err:
            out["database"] = f"error: {type(err).__name__}"
        try:
            from workers.app import app as celery_app

            with celery_app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            out["broker"] = "ok"
        except Exception as err:
            out["broker"] = f"error: {type(err).__name__}"
        return out

    checks = await run_in_threadpool(check)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = await run_in_threadpool(metrics.render, request.app.state.runtime)
    return Response(body, media_type=content_type)


def create_app(runtime: Runtime | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await app.state.batcher.close()
        app.state.runtime.close()

    app = Starlette(
        routes=[
            Route("/webhooks/{system}", receive_webhook, methods=["POST"]),
            Route("/webhooks/{system}/{token}", receive_webhook, methods=["POST"]),
            Route("/triggers/poll/{system}", trigger_poll, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi_endpoint, methods=["GET"]),
            ops_mount(),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime or get_runtime()
    app.state.batcher = InboxBatcher(app.state.runtime)
    return app
