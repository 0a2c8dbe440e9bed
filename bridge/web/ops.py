"""The ops page: a small server-rendered view for operators, behind HTTP Basic auth.

Everything shown comes from the read models in `bridge.ops.status`; the retry buttons call
`workers.tasks.retry_deliveries`, the one function that re-queues failed deliveries. The
page answers 503 until `POSBRIDGE_OPS_PASSWORD` is set: it is never open without auth.
POSTs carry a CSRF token derived from the configured credentials (stable across web
processes, unknowable without the password) and are refused with 403 without it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates

from bridge.ops import status as read
from bridge.runtime import Runtime

TEMPLATES_DIR = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 4096
# Ids in URLs are checked before they reach a query: a database refuses NUL in text and
# integers beyond its column type, and that must read as "not found", not as a crash.
# deliveries.id is INTEGER, 32-bit on Postgres (the fuzzer found 2147483648 answering 500).
MAX_ROW_ID = 2**31 - 1
CUSTOMER_ID_LENGTH = 36
_ROW_ID = re.compile(r"[0-9]{1,19}")
MAX_FLASH_IDS = 50
CSRF_FIELD = "csrf"
REALM = "posbridge ops"
DISABLED = "ops page disabled: set POSBRIDGE_OPS_PASSWORD"

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}

Handler = Callable[[Request], Awaitable[Response]]


# -- auth -------------------------------------------------------------------------------
def _credentials(rt: Runtime) -> tuple[str, str] | None:
    secret = rt.settings.ops_password
    if secret is None or not secret.get_secret_value():
        return None
    return rt.settings.ops_user, secret.get_secret_value()


def _presented(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII header text
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _authorized(expected: tuple[str, str], presented: tuple[str, str] | None) -> bool:
    user, password = presented or ("", "")
    # Both comparisons always run, in constant time, so timing tells nothing about which failed.
    user_ok = hmac.compare_digest(user.encode(), expected[0].encode())
    password_ok = hmac.compare_digest(password.encode(), expected[1].encode())
    return presented is not None and user_ok and password_ok


def csrf_token(credentials: tuple[str, str]) -> str:
    """An HMAC keyed by the ops password: the same in every web process, secret without it."""
    user, password = credentials
    return hmac.new(password.encode(), b"posbridge-ops-csrf\0" + user.encode(), hashlib.sha256).hexdigest()


def _protected(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        expected = _credentials(_rt(request))
        if expected is None:
            return PlainTextResponse(DISABLED, status_code=503, headers=SECURITY_HEADERS)
        if not _authorized(expected, _presented(request)):
            return PlainTextResponse(
                "authentication required",
                status_code=401,
                headers={**SECURITY_HEADERS, "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        request.state.ops_csrf = csrf_token(expected)
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return guarded


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _base(request: Request) -> str:
    """The ops page's own path prefix (`/ops`, or under the app's root path)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    context = {
        "base": _base(request),
        "csrf": request.state.ops_csrf,
        "flash": _flash(request),
        **context,
    }
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _flash(request: Request) -> str | None:
    """The outcome of a retry, rebuilt from ids only: no free text travels in the URL."""
    params = request.query_params
    if "requeued" not in params:
        return None
    ids = [int(part) for part in params["requeued"].split(",")[:MAX_FLASH_IDS] if _ROW_ID.fullmatch(part)]
    if not ids:
        return "Nothing requeued: no failed delivery matched."
    noun = "delivery" if len(ids) == 1 else "deliveries"
    return f"Requeued {len(ids)} {noun}: " + ", ".join(f"#{i}" for i in ids) + "."


# -- pages ------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    rt = _rt(request)

    def load() -> dict[str, Any]:
        return {
            "systems": read.system_status(rt),
            "failed": read.delivery_rows(rt, state="failed", limit=200),
            "unlinked": read.unlinked_orders(rt, limit=100),
        }

    return _render(request, "ops/index.html", await run_in_threadpool(load))


async def customers(request: Request) -> Response:
    rt = _rt(request)
    q = "".join(ch for ch in request.query_params.get("q", "")[:200] if ch.isprintable())
    rows = await run_in_threadpool(read.search_customers, rt, q, 50)
    return _render(request, "ops/customers.html", {"q": q, "rows": rows})


async def customer(request: Request) -> Response:
    rt = _rt(request)
    customer_id = str(request.path_params["customer_id"])
    valid = len(customer_id) <= CUSTOMER_ID_LENGTH and customer_id.isprintable()
    view = await run_in_threadpool(read.customer_view, rt, customer_id) if valid else None
    if view is None:
        shown = customer_id[:64]
        customer_id = shown if shown.isprintable() else shown.encode("unicode_escape").decode("ascii")
        return _render(request, "ops/not_found.html", {"customer_id": customer_id}, status_code=404)
    attempts: dict[int, list[dict[str, Any]]] = {}
    for attempt in view["attempts"]:
        attempts.setdefault(int(attempt["delivery_id"]), []).append(attempt)
    return _render(request, "ops/customer.html", {"c": view, "attempts_by_delivery": attempts})


# -- actions ----------------------------------------------------------------------------
async def _form(request: Request) -> dict[str, str] | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    return {key: values[0] for key, values in parsed.items() if values}


def _back(request: Request, form: dict[str, str]) -> str:
    """Where to return after an action: an ops page only (never an open redirect)."""
    base = _base(request)
    target = form.get("next", "")
    if target.startswith(base + "/") and not target.startswith("//") and "\\" not in target:
        return target.split("?", 1)[0]
    return base + "/"


async def _act(request: Request, action: Callable[[Runtime], list[int]]) -> Response:
    form = await _form(request)
    if form is None or not hmac.compare_digest(
        form.get(CSRF_FIELD, "").encode(), str(request.state.ops_csrf).encode()
    ):
        return PlainTextResponse("missing or invalid CSRF token", status_code=403)
    requeued = await run_in_threadpool(action, _rt(request))
    query = urlencode({"requeued": ",".join(str(i) for i in requeued)})
    return RedirectResponse(f"{_back(request, form)}?{query}", status_code=303)


async def retry_one(request: Request) -> Response:
    from workers.tasks import retry_deliveries

    delivery_id = int(request.path_params["delivery_id"])
    if not 0 < delivery_id <= MAX_ROW_ID:
        return PlainTextResponse("no such delivery", status_code=404)
    return await _act(request, lambda rt: retry_deliveries(rt, delivery_id=delivery_id))


async def retry_system(request: Request) -> Response:
    from workers.tasks import retry_deliveries

    system = str(request.path_params["system"])
    if system not in _rt(request).systems:
        return PlainTextResponse("unknown system", status_code=404)
    return await _act(request, lambda rt: retry_deliveries(rt, system=system))


# -- wiring -----------------------------------------------------------------------------
def ops_routes() -> list[Route]:
    return [
        Route("/", _protected(index), methods=["GET"], name="index"),
        Route("/customers", _protected(customers), methods=["GET"], name="customers"),
        Route("/customers/{customer_id}", _protected(customer), methods=["GET"], name="customer"),
        Route("/deliveries/{delivery_id:int}/retry", _protected(retry_one), methods=["POST"], name="retry"),
        Route(
            "/systems/{system}/retry-failed",
            _protected(retry_system),
            methods=["POST"],
            name="retry_system",
        ),
    ]


def ops_mount() -> Mount:
    """The ops page under `/ops/`; `bridge.web.app.create_app` mounts it."""
    return Mount("/ops", routes=ops_routes(), name="ops")
