"""Shared machinery of the POS sandboxes.

Every sandbox gets, from here:
- a control API under `/_sandbox/` (ground truth, stats, faults, till edits, reset, drain);
- fault injection in front of its vendor routes (latency, 5xx, 429, a POS that is down,
  a rate-limit budget, and responses lost *after* the change was committed);
- an eventually consistent view for list/search endpoints (`Store.visible`);
- at-least-once webhook delivery with retries, duplicates and no guaranteed order.

A subclass supplies its vendor routes, its error shape and its till-edit behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("posbridge.sandbox")


class ResponseLost(Exception):
    """Raised after a committed request to make the caller lose the response."""


def _not_an_injected_loss(record: logging.LogRecord) -> bool:
    # The server logs every ResponseLost as "Exception in ASGI application" with its
    # traceback: an injected fault, not news. Dropping it here also spares formatting those
    # tracebacks in server threads, which on CPython 3.11 races with the main thread's own
    # AST use (SystemError "AST constructor recursion depth mismatch").
    return not (record.exc_info and isinstance(record.exc_info[1], ResponseLost))


logging.getLogger("uvicorn.error").addFilter(_not_an_injected_loss)


class Faults(BaseModel):
    """What can go wrong, all off by default. Rates are probabilities per request."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    latency_ms: float = 0.0
    lose_response_after_commit_rate: float = 0.0
    consistency_lag_ms: float = 0.0
    down: bool = False
    # A budget like the vendor's own: at most `rate_limit_requests` per `rate_limit_window_s`.
    rate_limit_requests: int | None = None
    rate_limit_window_s: float = 1.0
    webhook_duplicate_rate: float = 0.0
    webhook_jitter_ms: float = 0.0
    # Every webhook sent this many times (each copy jittered on its own), on top of duplicates.
    webhook_copies: int = Field(default=1, ge=1, le=10)
    webhooks_enabled: bool = True
    seed: int | None = None


class RateLimiter:
    """A sliding-window request budget per key."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, limit: int, window_s: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - window_s:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class Store:
    """Records by id, with enough history to serve an eventually consistent listing."""

    HISTORY_S = 300.0

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}
        self.keep_history = False
        self.lock = threading.RLock()

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            stored = copy.deepcopy(record)
            if self.keep_history:
                now = time.monotonic()
                history = self._history.setdefault(key, [(0.0, copy.deepcopy(self._records.get(key)))])
                history.append((now, stored))
                # Keep what a lagging reader may still see, and nothing older.
                while len(history) > 2 and history[1][0] < now - self.HISTORY_S:
                    history.pop(0)
            self._records[key] = stored
            return copy.deepcopy(stored)

    def get(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            record = self._records.get(key)
            return copy.deepcopy(record) if record is not None else None

    def ref(self, key: str) -> dict[str, Any] | None:
        """The stored record itself, for read-only use on hot paths (no copy)."""
        return self._records.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def keys(self) -> list[str]:
        with self.lock:
            return list(self._records)

    def values(self) -> Iterator[dict[str, Any]]:
        """Live records, uncopied, in insertion order; callers must not mutate them."""
        return iter(list(self._records.values()))

    def visible(self, lag_s: float) -> Iterator[dict[str, Any]]:
        """What a list/search endpoint sees when changes take `lag_s` to appear."""
        if lag_s <= 0 or not self.keep_history:
            yield from self.values()
            return
        horizon = time.monotonic() - lag_s
        with self.lock:
            items = list(self._records.items())
            histories = {k: list(v) for k, v in self._history.items()}
        for key, record in items:
            history = histories.get(key)
            if not history:
                yield record
                continue
            snapshot: dict[str, Any] | None = None
            for at, version in history:
                if at <= horizon:
                    snapshot = version
            if snapshot is not None:
                yield snapshot

    def clear(self) -> None:
        with self.lock:
            self._records.clear()
            self._history.clear()

    def dump(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._records)

    def load(self, records: Mapping[str, dict[str, Any]]) -> None:
        with self.lock:
            self._records = {k: copy.deepcopy(v) for k, v in records.items()}
            self._history.clear()


# Webhook posts one sandbox has open at once.
MAX_IN_FLIGHT = 16


class WebhookSender:
    """Delivers webhooks the way vendors do: at least once, retried, in no guaranteed order."""

    def __init__(
        self,
        url: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        schedule: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0),
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.transport = transport
        self.schedule = schedule
        self.rng = rng or random.Random()
        self.duplicate_rate = 0.0
        self.jitter_ms = 0.0
        self.copies = 1
        self.enabled = True
        self.stats: Counter[str] = Counter()
        self.log: deque[dict[str, Any]] = deque(maxlen=500)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Vendors send from a bounded pool, and so do we: a bulk write emits a hook per
        # record, and thousands of posts queued inside httpx's connection pool cost time
        # quadratic in their number (a 100,000-record backfill stalled on it).
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)  # binds to a loop on first wait

    def emit(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None:
        target = url or self.url
        if not target or not self.enabled:
            return
        copies = self.copies + (1 if self.rng.random() < self.duplicate_rate else 0)
        for _ in range(copies):
            self.stats["emitted"] += 1
            task = asyncio.get_running_loop().create_task(self._deliver(target, body, dict(headers)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        if self.jitter_ms:
            await asyncio.sleep(self.rng.random() * self.jitter_ms / 1000)
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self.transport, timeout=10.0)
        for attempt, delay in enumerate((*self.schedule, None)):
            self.stats["attempts"] += 1
            try:
                async with self._in_flight:  # not held through the back-off sleep below
                    response = await self._client.post(url, content=body, headers=headers)
                status = response.status_code
            except httpx.HTTPError as err:
                status = 0
                log.debug("webhook to %s failed: %s", url, err)
            self.log.append({"url": url, "status": status, "attempt": attempt, "at": time.time()})
            if 200 <= status < 300:
                self.stats["delivered"] += 1
                return
            if delay is None:
                break
            await asyncio.sleep(delay)
        self.stats["gave_up"] += 1

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self._tasks

    def reset(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self.stats.clear()
        self.log.clear()


class _FaultLayer:
    """ASGI middleware in front of the vendor routes: stats first, then faults."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        sb = self.sandbox
        faults = sb.faults
        method = scope["method"]
        sb.stats["requests"][f"{method} {sb.route_name(scope)}"] += 1
        request = Request(scope, receive)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        injected: Response | None = None
        if faults.down:
            injected = sb.error(503, "SERVICE_UNAVAILABLE", "the POS is down")
        elif (
            faults.rate_limit_requests is not None
            and not sb.limiter.allow(
                sb.rate_limit_key(request), faults.rate_limit_requests, faults.rate_limit_window_s
            )
        ) or (faults.rate_limit_rate and sb.rng.random() < faults.rate_limit_rate):
            injected = sb.rate_limited()
        elif faults.error_rate and sb.rng.random() < faults.error_rate:
            injected = sb.error(500, "INTERNAL_SERVER_ERROR", "injected server error")
        if injected is not None:
            sb.stats["faults"][str(injected.status_code)] += 1
            await injected(scope, receive, send)
            return
        lose = (
            method not in ("GET", "HEAD")
            and faults.lose_response_after_commit_rate
            and sb.rng.random() < faults.lose_response_after_commit_rate
        )
        if not lose:
            await self.app(scope, receive, send)
            return
        # Let the request commit, swallow its answer, then break the connection mid-body.
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        await self.app(scope, receive, capture)
        sb.stats["faults"]["lost_after_commit"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ResponseLost(f"response to {method} {scope['path']} lost after commit")


class Sandbox:
    """Base of every POS simulator. Subclasses set `system` and implement the hooks."""

    system: ClassVar[str]
    default_tokens: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        tokens: Collection[str] | None = None,
        persist_path: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.tokens: frozenset[str] | None = frozenset(tokens) if tokens else None
        self.store = Store()
        self.limiter = RateLimiter()
        self.webhooks = WebhookSender(webhook_url, webhook_transport, rng=self.rng)
        self.persist_path = persist_path
        self.stats: dict[str, Any] = {}
        self._reset_stats()

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            yield
            await self._on_shutdown()

        self.app = Starlette(
            routes=[*self.routes(), Mount("/_sandbox", routes=self._control_routes())],
            lifespan=lifespan,
        )
        self.app.add_middleware(_FaultLayer, sandbox=self)
        self.app.state.sandbox = self
        if persist_path and persist_path.exists():
            self.load_state(json.loads(persist_path.read_text()))

    # -- hooks for subclasses ----------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def error(self, status: int, code: str, message: str) -> Response:
        """A response in the vendor's error shape."""
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    def rate_limited(self) -> Response:
        return self.error(429, "RATE_LIMITED", "rate limit exceeded")

    def rate_limit_key(self, request: Request) -> str:
        return request.headers.get("authorization", "anonymous")

    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A person creates or edits a customer at the till; returns the stored record."""
        raise NotImplementedError

    def ground_truth(self) -> list[dict[str, Any]]:
        return list(self.store.dump().values())

    @classmethod
    def for_demo(cls, webhook_url: str) -> Sandbox:
        """An instance configured as a retailer would have it (e.g. opt-in hooks switched on)."""
        return cls(webhook_url=webhook_url)

    def adapter_env(self, base_url: str) -> dict[str, str]:
        """Settings that point this system's adapter at this sandbox, keyed by setting name
        (the loader adds `POSBRIDGE_<SYSTEM>_`). The demo and the tests wire stacks with it."""
        return {"base_url": base_url}

    def extra_control_routes(self) -> list[BaseRoute]:
        return []

    def on_reset(self) -> None:
        """Clear anything beyond the store (sessions, locks, counters)."""

    def save_state(self) -> dict[str, Any]:
        return {"records": self.store.dump()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.store.load(state.get("records", {}))

    # -- helpers for subclasses --------------------------------------------------------
    def token_ok(self, token: str | None) -> bool:
        if not token:
            return False
        allowed = self.tokens if self.tokens is not None else None
        return True if allowed is None else token in allowed

    def bearer(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def committed(self, count: int = 1) -> None:
        """Count a write that changed state (what `/_sandbox/stats` calls writes)."""
        self.stats["writes"] += count
        if self.persist_path:
            self._persist()

    def emit_webhook(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.webhooks.emit(body, headers)

    @property
    def consistency_lag_s(self) -> float:
        return self.faults.consistency_lag_ms / 1000

    def route_name(self, scope: Scope) -> str:
        for route in self.app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", scope["path"]))
        return str(scope["path"])

    # -- control API -------------------------------------------------------------------
    def _reset_stats(self) -> None:
        self.stats = {"requests": Counter(), "writes": 0, "faults": Counter()}

    def _persist(self) -> None:
        assert self.persist_path is not None
        tmp = self.persist_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.save_state(), default=str))
        tmp.replace(self.persist_path)

    async def _on_shutdown(self) -> None:
        if self.persist_path:
            self._persist()

    def set_faults(self, changes: Mapping[str, Any]) -> Faults:
        self.faults = Faults(**{**self.faults.model_dump(), **changes})
        if self.faults.seed is not None and "seed" in changes:
            self.rng.seed(self.faults.seed)
        self.store.keep_history = self.faults.consistency_lag_ms > 0 or self.store.keep_history
        self.webhooks.duplicate_rate = self.faults.webhook_duplicate_rate
        self.webhooks.jitter_ms = self.faults.webhook_jitter_ms
        self.webhooks.copies = self.faults.webhook_copies
        self.webhooks.enabled = self.faults.webhooks_enabled
        return self.faults

    def reset(self) -> None:
        self.store.clear()
        self.limiter.reset()
        self.webhooks.reset()
        self.faults = Faults()
        self.set_faults({})
        self._reset_stats()
        self.on_reset()

    def _control_routes(self) -> list[BaseRoute]:
        async def customers(request: Request) -> Response:
            return JSONResponse({"customers": self.ground_truth(), "count": len(self.store)})

        async def stats(request: Request) -> Response:
            return JSONResponse(
                {
                    "requests": dict(self.stats["requests"]),
                    "requests_total": sum(self.stats["requests"].values()),
                    "writes": self.stats["writes"],
                    "faults": dict(self.stats["faults"]),
                    "webhooks": {**dict(self.webhooks.stats), "pending": self.webhooks.pending},
                }
            )

        async def faults(request: Request) -> Response:
            if request.method == "POST":
                try:
                    self.set_faults(await request.json())
                except (ValueError, TypeError) as err:
                    return JSONResponse({"error": str(err)}, status_code=422)
            return JSONResponse(self.faults.model_dump())

        async def edit(request: Request) -> Response:
            try:
                payload = await request.json()
            except ValueError as err:
                return JSONResponse({"error": f"invalid JSON: {err}"}, status_code=400)
            try:
                record = await self.till_edit(payload)
            except KeyError as err:
                return JSONResponse({"error": f"no such record: {err}"}, status_code=404)
            except ValueError as err:
                return JSONResponse({"error": str(err)}, status_code=422)
            return JSONResponse(record)

        async def reset(request: Request) -> Response:
            self.reset()
            return Response(status_code=204)

        async def drain(request: Request) -> Response:
            done = await self.webhooks.drain(float(request.query_params.get("timeout", "30")))
            return JSONResponse({"drained": done, "pending": self.webhooks.pending})

        async def webhook_target(request: Request) -> Response:
            body = await request.json()
            self.webhooks.url = body.get("url") or None
            return JSONResponse({"url": self.webhooks.url})

        return [
            Route("/customers", customers, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/faults", faults, methods=["GET", "POST"]),
            Route("/edit", edit, methods=["POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/drain", drain, methods=["POST"]),
            Route("/webhook-target", webhook_target, methods=["POST"]),
            *self.extra_control_routes(),
        ]


SandboxFactory = Callable[..., Sandbox]
