"""A synchronous httpx transport in front of an ASGI app.

Adapters are synchronous (they run in Celery workers) and `httpx.ASGITransport` is
async-only, so this runs the app on a private event loop thread. Requests go through the
app's real routing, auth and parsing; nothing is mocked. The loop stays alive, so a
sandbox's background webhook deliveries keep running between requests.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx


class ResponseLostError(httpx.RemoteProtocolError):
    """The server committed the request, then the connection died before the answer."""


class SyncASGITransport(httpx.BaseTransport):
    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self._async = httpx.ASGITransport(app=app, client=client)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="asgi-loop", daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        future = asyncio.run_coroutine_threadsafe(self._send(request, body), self.loop)
        return future.result()

    async def _send(self, request: httpx.Request, body: bytes) -> httpx.Response:
        from bridge.sandbox.kit import ResponseLost

        async_request = httpx.Request(
            request.method, request.url, headers=request.headers, content=body, extensions=request.extensions
        )
        try:
            response = await self._async.handle_async_request(async_request)
        except ResponseLost as err:
            raise ResponseLostError(str(err), request=request) from err
        content = await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the app's loop (for tests poking at sandbox internals)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
