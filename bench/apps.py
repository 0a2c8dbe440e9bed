"""Servers the benchmarks start: the bare Starlette baseline and the bridge itself."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def bare_webhook(request: Request) -> Response:
    # The floor: read the body and answer, as any webhook endpoint must.
    body = await request.body()
    return JSONResponse({"accepted": 1, "bytes": len(body)})


bare = Starlette(routes=[Route("/webhooks/{system}", bare_webhook, methods=["POST"])])


def bridge() -> Starlette:
    """The real bridge app, configured from the environment like `posbridge web`."""
    from bridge.runtime import get_runtime
    from bridge.web.app import create_app

    rt = get_runtime()
    rt.db.upgrade()
    return create_app(rt)
