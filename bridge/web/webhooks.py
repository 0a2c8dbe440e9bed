"""`POST /webhooks/{system}`: verify, parse, record durably, then enqueue.

Order matters: nothing is stored for a request that fails the size limit (413), the
signature (401), parsing and the storability check (400/422) or the replay check (409);
the inbox row is committed before we answer 200, and ingest is enqueued only after that
commit. No input a client can send is answered with 5xx: those are kept for our own
failures (the database unreachable), which the sender should retry.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections import Counter

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge import logs, metrics
from bridge.adapters.base import Capability, WebhookRequest
from bridge.adapters.errors import PayloadError, SignatureError
from bridge.engine.inbox import ReplayRefused, check_not_replayed, check_storable
from bridge.runtime import Runtime

log = logging.getLogger("posbridge.web")


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    # ASCII digits only (str.isdigit() also accepts "²", which int() refuses), and no int()
    # of thousands of digits: any length past 18 digits is over every limit anyway.
    digits = declared is not None and declared.isascii() and declared.isdigit()
    if digits and declared is not None and (len(declared) > 18 or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# Echoed event types and reasons are bounded: a hostile body must not make us send it
# (or log it) back at length.
MAX_ECHO = 200
MAX_LISTED = 20


def printable(text: str, limit: int = MAX_ECHO) -> str:
    """Text safe to put in a JSON answer or a log line: bounded, and valid UTF-8."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")


def problem(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": printable(reason, 500)}, status_code=status)


async def receive_webhook(request: Request) -> Response:
    correlation_id = str(uuid.uuid4())
    with logs.correlated(correlation_id):
        response = await _receive(request, correlation_id)
    response.headers["x-correlation-id"] = correlation_id
    return response


async def _receive(request: Request, correlation_id: str) -> Response:
    rt: Runtime = request.app.state.runtime
    system = request.path_params["system"]
    if system not in rt.systems or Capability.WEBHOOKS not in rt.classes[system].capabilities:
        return problem(404, f"no webhook endpoint for system {system!r}")
    adapter = rt.adapter(system)
    try:
        body = await read_limited(request, rt.settings.max_body_bytes)
    except BodyTooLarge:
        metrics.WEBHOOK_EVENTS.labels(system, "too_large").inc()
        log.warning("webhook for %s refused: body over %d bytes", system, rt.settings.max_body_bytes)
        return problem(413, f"body larger than {rt.settings.max_body_bytes} bytes")
    hook = WebhookRequest(
        url=str(request.url),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        path_token=request.path_params.get("token"),
    )
    try:
        adapter.verify_webhook(hook)
    except SignatureError as err:
        metrics.WEBHOOK_EVENTS.labels(system, "bad_signature").inc()
        metrics.SIGNATURE_FAILURES.labels(system).inc()
        log.warning("webhook for %s refused: %s", system, err)
        return problem(401, "signature verification failed")
    except Exception:
        # A verifier that crashes has not verified anything: fail closed, and report the bug.
        metrics.WEBHOOK_EVENTS.labels(system, "bad_signature").inc()
        metrics.SIGNATURE_FAILURES.labels(system).inc()
        log.exception("webhook for %s refused: the signature check failed unexpectedly", system)
        return problem(401, "signature verification failed")
    try:
        batch = adapter.parse_webhook(hook)
        check_storable(batch.events)
        check_not_replayed(batch.events, rt.settings.inbox_retention_h)
    except PayloadError as err:
        metrics.WEBHOOK_EVENTS.labels(system, "malformed").inc()
        log.warning("webhook for %s malformed: %s", system, printable(err.reason))
        return problem(err.status if err.status in (400, 422) else 400, err.reason)
    except ReplayRefused as err:
        metrics.WEBHOOK_EVENTS.labels(system, "replayed").inc()
        log.warning("webhook for %s refused: %s", system, printable(err.reason))
        return problem(409, err.reason)
    except Exception:
        # The body is the only input here, so this is a parser bug meeting odd input: the
        # sender gets a 4xx (a 5xx would invite endless retries of the same body) and we
        # get the traceback (metric outcome `parse_error`) to fix the adapter.
        metrics.WEBHOOK_EVENTS.labels(system, "parse_error").inc()
        log.exception("webhook for %s: the parser failed on this body; refused", system)
        return problem(400, "body could not be parsed")
    if batch.unknown:
        metrics.WEBHOOK_EVENTS.labels(system, "unknown_type").inc(len(batch.unknown))
    if batch.ignored:
        metrics.WEBHOOK_EVENTS.labels(system, "ignored").inc(len(batch.ignored))
    # One line per distinct type: a batch of thousands of unknown events is one log line.
    for event_type, count in list(Counter(batch.unknown).items())[:MAX_LISTED]:
        log.warning(
            "webhook for %s: unknown event type %r acknowledged and ignored (x%d)",
            system,
            printable(event_type),
            count,
        )
    for event_type, count in list(Counter(batch.ignored).items())[:MAX_LISTED]:
        log.info(
            "webhook for %s: event type %r ignored by design (x%d)", system, printable(event_type), count
        )
    new_ids, duplicates = (
        await request.app.state.batcher.record(system, batch.events, body, correlation_id)
        if batch.events
        else ([], 0)
    )
    if new_ids:
        metrics.WEBHOOK_EVENTS.labels(system, "accepted").inc(len(new_ids))
        log.info("webhook for %s: %d event(s) recorded as inbox %s", system, len(new_ids), new_ids)
    if duplicates:
        metrics.WEBHOOK_EVENTS.labels(system, "duplicate").inc(duplicates)
        # A redelivery, or a change a poll recorded first: acknowledged, nothing new stored.
        log.info("webhook for %s: %d event(s) already recorded, acknowledged", system, duplicates)
    return JSONResponse(
        {
            "accepted": len(new_ids),
            "duplicates": duplicates,
            "ignored": [printable(t) for t in dict.fromkeys(batch.ignored + batch.unknown)][:MAX_LISTED],
        }
    )


async def trigger_poll(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    system = request.path_params["system"]
    token = rt.settings.trigger_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if (
        token is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())
    ):
        return problem(401, "a valid bearer token is required")
    caps = rt.classes[system].capabilities if system in rt.systems else frozenset()
    if Capability.POLLING not in caps and Capability.ORDERS not in caps:
        return problem(404, f"system {system!r} is not enabled for polling")
    await run_in_threadpool(rt.dispatch.poll, system)
    return JSONResponse({"queued": system}, status_code=202)
