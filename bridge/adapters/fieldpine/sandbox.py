"""A Fieldpine OpenApi simulator: `/OpenApi2/Customers` (and the hosted `/OpenApi2_<RmSystem>/`).

Faithful to the seed document and POS-APIS.md where they say something; where Fieldpine
documents nothing, the choices below are *this sandbox's reading* and are marked as such:

- POST with a known `CustomerId` is an update of that record, and a sparse one: fields
  the body leaves out keep their value. A body that changes nothing is not a write (no
  edit date bump, no hook), which is how "the same body sent again is processed once"
  works for bodies that carry an id. Bodies without an id are remembered by a digest of
  the body, so an identical resend returns the customer the first one made.
- The POST answer uses the listing envelope, `{"RecordCount": 1, "Data": [record]}`.
- `englishquery` understands three things: `editdtu after <date>` (inclusive, "changed
  since": `17-jan-2020` is the start of that day UTC, ISO 8601 keeps its time), our own
  `customerid <uuid>` (Fieldpine documents no get-by-id), and free text whose every word
  must occur in the name, company, e-mail or a phone number (digits compared alone too).
- `limit` defaults to 100 when absent (the seed implies a default by asking for
  `limit=0` to get everything); `RecordCount` is the number of rows in the answer.
- Error codes: only 2003 appears in the docs; the others below are ours.
- Hooks (opt-in, as at Fieldpine: constructor `hook_secret`) are signed with
  `X-Fieldpine-HMAC` = lower-case hex HMAC-SHA256 of the raw body keyed by that secret
  (Fieldpine leaves the algorithm undocumented).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bridge.sandbox.kit import Sandbox

TEXT_FIELDS: tuple[str, ...] = (
    "Name",
    "FirstName",
    "LastName",
    "CompanyName",
    "Address1",
    "Address2",
    "Mobile",
    "Phone",
    "Email",
)
# Accounts are set up at the till (charge accounts), never through /Customers.
TILL_ONLY_FIELDS: tuple[str, ...] = ("AccountId", "AccountRetired")

CODE_BAD_INPUT = 2003
_CODES: dict[str, int] = {
    "UNAUTHORIZED": 1001,
    "NOT_FOUND": 2004,
    "RATE_LIMITED": 3001,
    "INTERNAL_SERVER_ERROR": 5000,
    "SERVICE_UNAVAILABLE": 5003,
}
DEFAULT_LIMIT = 100
STREAM_CHUNK_ROWS = 500

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_EDITDTU = re.compile(r"\beditdtu\s+after\s+(\S+)", re.IGNORECASE)
_CUSTOMERID = re.compile(r"\bcustomerid\s+(\S+)", re.IGNORECASE)
_DMY = re.compile(r"^(\d{1,2})-([a-z]{3})-(\d{4})$", re.IGNORECASE)
_PATH = re.compile(r"^/openapi2(?:_[^/]+)?/customers/?$", re.IGNORECASE)
_DIGITS = re.compile(r"\D")
_PHONEISH = re.compile(r"[+\d()\-.]+")


class BadInputError(ValueError):
    """A request Fieldpine would refuse with its error envelope (code 2003)."""


def iso(at: datetime) -> str:
    """The edit-date format: fixed width, so the strings sort like the instants."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_query_date(text: str) -> datetime:
    match = _DMY.match(text)
    if match:
        day, month, year = match.groups()
        if month.lower() not in _MONTHS:
            raise BadInputError(f"unknown month in date {text!r}")
        try:
            return datetime(int(year), _MONTHS[month.lower()], int(day), tzinfo=UTC)
        except ValueError as err:
            raise BadInputError(f"invalid date {text!r}") from err
    try:
        at = datetime.fromisoformat(text)
    except ValueError as err:
        raise BadInputError(f"invalid date {text!r}") from err
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def canonical_uuid(value: Any) -> str:
    if not isinstance(value, str):
        raise BadInputError("CustomerId must be a UUID string")
    try:
        return str(uuid.UUID(value.strip())).upper()
    except ValueError as err:
        raise BadInputError(f"CustomerId {value!r} is not a valid UUID") from err


class _CaseInsensitiveRoute(Route):
    """Fieldpine paths are case-insensitive and may carry the hosted `_<RmSystem>` suffix."""

    def __init__(self, path: str, endpoint: Any, methods: list[str]) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.path_regex = _PATH


class _Query:
    """A parsed GET /Customers request."""

    def __init__(self, params: dict[str, str]) -> None:
        text = params.get("englishquery", "")
        self.since: str | None = None
        self.customer_id: str | None = None
        match = _EDITDTU.search(text)
        if match:
            self.since = iso(parse_query_date(match.group(1)))
            text = text[: match.start()] + " " + text[match.end() :]
        match = _CUSTOMERID.search(text)
        if match:
            self.customer_id = canonical_uuid(match.group(1))
            text = text[: match.start()] + " " + text[match.end() :]
        self.terms = [term.lower() for term in text.split()]
        self.account: int | bool | None = False  # False: no account filter; None: any account
        flt = params.get("filter", "").strip().lower()
        if flt == "account":
            self.account = None
        elif flt.startswith("account="):
            try:
                self.account = int(flt.partition("=")[2])
            except ValueError as err:
                raise BadInputError(f"invalid account filter {flt!r}") from err
        elif flt:
            raise BadInputError(f"unknown filter {flt!r}")
        # A full listing or a pure change scan can be served from the edit-date index.
        self.plain = not self.terms and self.customer_id is None and self.account is False
        try:
            self.limit = int(params.get("limit", DEFAULT_LIMIT))
            self.page = int(params.get("page", "1"))
        except ValueError as err:
            raise BadInputError("limit and page must be integers") from err
        if self.limit < 0 or self.page < 1:
            raise BadInputError("limit must be >= 0 and page >= 1")

    def matches(self, record: dict[str, Any]) -> bool:
        if self.since is not None and record["LastEditDt"] < self.since:
            return False
        if self.customer_id is not None and record["CustomerId"] != self.customer_id:
            return False
        if self.account is not False:
            if record.get("AccountId") is None or record.get("AccountRetired"):
                return False
            if self.account is not None and record["AccountId"] != self.account:
                return False
        if self.terms:
            hay = " ".join(
                str(record.get(k) or "") for k in ("Name", "FirstName", "LastName", "CompanyName", "Email")
            ).lower()
            phones = " ".join(_DIGITS.sub("", str(record.get(k) or "")) for k in ("Mobile", "Phone"))
            hay += " " + " ".join(str(record.get(k) or "") for k in ("Mobile", "Phone")).lower()
            for term in self.terms:
                if term in hay:
                    continue
                # "+64211234567" or "21-123" should find "+64 21 123 4567" whatever the spacing.
                digits = _DIGITS.sub("", term)
                if digits and _PHONEISH.fullmatch(term) and digits in phones:
                    continue
                return False
        return True


class FieldpineSandbox(Sandbox):
    system = "fieldpine"

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        tokens: Collection[str] | None = None,
        persist_path: Path | None = None,
        seed: int | None = None,
        hook_secret: str | None = None,
    ) -> None:
        self.hook_secret = hook_secret
        # Digest of a POST body without CustomerId -> the customer it made.
        self._fingerprints: dict[str, str] = {}
        # (LastEditDt, CustomerId) newest first; rebuilt lazily after writes.
        self._order: list[tuple[str, str]] | None = None
        super().__init__(
            webhook_url=webhook_url,
            webhook_transport=webhook_transport,
            tokens=tokens,
            persist_path=persist_path,
            seed=seed,
        )

    # -- kit hooks ---------------------------------------------------------------------
    @classmethod
    def for_demo(cls, webhook_url: str) -> FieldpineSandbox:
        # Hooks are opt-in per retailer; the demo retailer has them on.
        return cls(webhook_url=webhook_url, hook_secret="demo-fieldpine-hook-secret")

    def adapter_env(self, base_url: str) -> dict[str, str]:
        env = {"base_url": base_url, "api_key": sorted(self.tokens)[0] if self.tokens else "sandbox-api-key"}
        if self.hook_secret:
            env["hook_secret"] = self.hook_secret
        return env

    def routes(self) -> list[BaseRoute]:
        return [_CaseInsensitiveRoute("/OpenApi2/Customers", self._customers, methods=["GET", "POST"])]

    def error(self, status: int, code: str, message: str) -> Response:
        number = _CODES.get(code, CODE_BAD_INPUT if status == 400 else 5000)
        return JSONResponse({"error": {"Code": number, "Message": message}}, status_code=status)

    def rate_limited(self) -> Response:
        response = self.error(429, "RATE_LIMITED", "API billing threshold exceeded")
        response.headers["Retry-After"] = str(max(1, round(self.faults.rate_limit_window_s)))
        return response

    def rate_limit_key(self, request: Request) -> str:
        return request.headers.get("x-api-key", "anonymous")

    def extra_control_routes(self) -> list[BaseRoute]:
        return [Route("/seed", self._seed_route, methods=["POST"])]

    def on_reset(self) -> None:
        self._fingerprints.clear()
        self._order = None

    def save_state(self) -> dict[str, Any]:
        return {**super().save_state(), "fingerprints": dict(self._fingerprints)}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._fingerprints = dict(state.get("fingerprints", {}))
        self._order = None

    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        fields = payload.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("fields must be an object")
        record_id = payload.get("id")
        try:
            if record_id:
                record_id = canonical_uuid(record_id)
                if record_id not in self.store:
                    raise KeyError(record_id)
            changes = self._validated(fields, allow=(*TEXT_FIELDS, "EUCitizen", *TILL_ONLY_FIELDS))
        except BadInputError as err:
            raise ValueError(str(err)) from err
        record, _ = self._apply(record_id or self._new_id(), changes)
        return record

    # -- records -----------------------------------------------------------------------
    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper()

    @staticmethod
    def _validated(body: dict[str, Any], allow: tuple[str, ...]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for key in allow:
            if key not in body:
                continue
            value = body[key]
            if key in TEXT_FIELDS:
                if value is not None and not isinstance(value, str):
                    raise BadInputError(f"{key} must be a string")
                changes[key] = value or ""
            elif key in ("EUCitizen", "AccountRetired"):
                if not isinstance(value, bool):
                    raise BadInputError(f"{key} must be true or false")
                changes[key] = value
            elif key == "AccountId":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise BadInputError("AccountId must be an integer")
                changes[key] = value
        return changes

    def _apply(self, record_id: str, changes: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or update; returns (record, written). Emits the hook for real changes."""
        with self.store.lock:
            current = self.store.get(record_id)
            is_new = current is None
            if current is None:
                current = {
                    "CustomerId": record_id,
                    **dict.fromkeys(TEXT_FIELDS, ""),
                    "EUCitizen": False,
                    "AccountId": None,
                    "AccountRetired": False,
                    "LastEditDt": "",
                }
            record = {**current, **changes}
            # Documented: Name is built from FirstName and LastName when it is not supplied.
            if not changes.get("Name") and ("FirstName" in changes or "LastName" in changes):
                built = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
                record["Name"] = built or record["Name"]
            if record == current and not is_new:
                return current, False
            now = datetime.now(UTC)
            record["LastEditDt"] = iso(now)
            stored = self.store.put(record_id, record)
            self._order = None
        self.committed()
        self._hook(record_id, now)
        return stored, True

    def _hook(self, record_id: str, at: datetime) -> None:
        if not self.hook_secret:
            return
        body = json.dumps(
            {
                "Event": "CustomerChanged",
                "CustomerId": record_id,
                "EventId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "Time": iso(at),
            },
            separators=(",", ":"),
        ).encode()
        signature = hmac.new(self.hook_secret.encode(), body, hashlib.sha256).hexdigest()
        self.emit_webhook(body, {"Content-Type": "application/json", "X-Fieldpine-HMAC": signature})

    def _index(self) -> list[tuple[str, str]]:
        order = self._order
        if order is None:
            with self.store.lock:
                order = sorted(
                    ((r["LastEditDt"], r["CustomerId"]) for r in self.store.values()), reverse=True
                )
                self._order = order
        return order

    def _ordered(self) -> Iterator[dict[str, Any]]:
        """Every visible record, edit date descending (ties by id, so pages are stable)."""
        lag = self.consistency_lag_s
        if lag > 0:
            rows = sorted(
                self.store.visible(lag), key=lambda r: (r["LastEditDt"], r["CustomerId"]), reverse=True
            )
            yield from rows
            return
        for _, record_id in self._index():
            record = self.store.ref(record_id)
            if record is not None:
                yield record

    # -- vendor routes -----------------------------------------------------------------
    def _authorised(self, request: Request) -> Response | None:
        if not self.token_ok(request.headers.get("x-api-key", "").strip()):
            return self.error(401, "UNAUTHORIZED", "missing or invalid X-Api-Key")
        return None

    async def _customers(self, request: Request) -> Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        try:
            if request.method == "POST":
                return await self._post(request)
            # Parameter names are case-insensitive at Fieldpine; values are not touched.
            params = {k.lower(): v for k, v in request.query_params.multi_items()}
            return self._list(_Query(params))
        except BadInputError as err:
            return self.error(400, "BAD_INPUT", str(err))

    async def _post(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise BadInputError(f"body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise BadInputError("body must be a JSON object")
        # Field names are matched case-insensitively too.
        body = {_canonical_key(k): v for k, v in body.items()}
        changes = self._validated(body, allow=(*TEXT_FIELDS, "EUCitizen"))
        given_id = body.get("CustomerId")
        if given_id:
            record, _ = self._apply(canonical_uuid(given_id), changes)
            return _one(record)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        known = self._fingerprints.get(digest)
        existing = self.store.get(known) if known else None
        if existing is not None:
            return _one(existing)
        record_id = self._new_id()
        self._fingerprints[digest] = record_id
        record, _ = self._apply(record_id, changes)
        return _one(record)

    def _list(self, query: _Query) -> Response:
        if query.page > 1 and not query.limit:
            ids: list[str] = []  # limit=0 is one page holding everything
        elif query.customer_id is not None and not self.consistency_lag_s:
            record = self.store.ref(query.customer_id)
            ids = [query.customer_id] if record is not None and query.matches(record) else []
        elif query.plain and not self.consistency_lag_s:
            ids = self._index_page(query)
        else:
            ids = self._scan_page(query)
        return StreamingResponse(self._stream(ids), media_type="application/json")

    def _index_page(self, query: _Query) -> list[str]:
        """Backfills and change scans page deep into large stores: the rows edited at/after
        `since` are a prefix of the edit-date order, so a page is a slice, not a scan."""
        order = self._index()
        stop = len(order)
        if query.since is not None:
            low, high = 0, len(order)
            while low < high:  # first position edited before `since`
                mid = (low + high) // 2
                if order[mid][0] < query.since:
                    high = mid
                else:
                    low = mid + 1
            stop = low
        start = (query.page - 1) * query.limit
        end = min(stop, start + query.limit) if query.limit else stop
        return [record_id for _, record_id in order[start:end]]

    def _scan_page(self, query: _Query) -> list[str]:
        skip = (query.page - 1) * query.limit if query.limit else 0
        ids: list[str] = []
        for record in self._ordered():
            if not query.matches(record):
                continue
            if skip:
                skip -= 1
                continue
            ids.append(record["CustomerId"])
            if query.limit and len(ids) >= query.limit:
                break
        return ids

    async def _stream(self, ids: list[str]) -> AsyncIterator[bytes]:
        # Hundreds of thousands of rows: encode in chunks so memory stays flat.
        yield f'{{"RecordCount":{len(ids)},"Data":['.encode()
        first = True
        for start in range(0, len(ids), STREAM_CHUNK_ROWS):
            rows = (self.store.ref(i) for i in ids[start : start + STREAM_CHUNK_ROWS])
            text = ",".join(json.dumps(r, separators=(",", ":")) for r in rows if r is not None)
            if text:
                yield (text if first else "," + text).encode()
                first = False
        yield b"]}"

    # -- control: bulk seed --------------------------------------------------------------
    async def _seed_route(self, request: Request) -> Response:
        try:
            payload = await request.json()
            count = int(payload.get("count", 0))
        except (ValueError, TypeError, AttributeError) as err:
            return JSONResponse({"error": f"invalid seed request: {err}"}, status_code=422)
        if not 0 <= count <= 1_000_000:
            return JSONResponse({"error": "count must be 0..1000000"}, status_code=422)
        started = time.monotonic()
        self.seed_customers(count)
        return JSONResponse(
            {"seeded": count, "total": len(self.store), "seconds": round(time.monotonic() - started, 3)}
        )

    def seed_customers(self, count: int) -> None:
        """Pre-existing customers, as a retailer's history would have them (no hooks: not edits)."""
        rng = self.rng
        now = datetime.now(UTC)
        new: dict[str, dict[str, Any]] = {}
        for n in range(count):
            first = rng.choice(_FIRST)
            last = rng.choice(_LAST)
            record_id = self._new_id()
            edited = now - timedelta(seconds=rng.uniform(60, 3 * 365 * 86400))
            has_account = rng.random() < 0.1
            new[record_id] = {
                "CustomerId": record_id,
                "Name": f"{first} {last}",
                "FirstName": first,
                "LastName": last,
                "CompanyName": rng.choice(_COMPANIES) if rng.random() < 0.15 else "",
                "Address1": f"{rng.randint(1, 999)} {rng.choice(_STREETS)}",
                "Address2": rng.choice(_TOWNS),
                "Mobile": f"+64 21 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                "Phone": f"+64 9 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
                if rng.random() < 0.3
                else "",
                "Email": f"{first}.{last}{n}@example.com".lower(),
                "EUCitizen": rng.random() < 0.05,
                "AccountId": rng.randint(1000, 9999) if has_account else None,
                "AccountRetired": has_account and rng.random() < 0.1,
                "LastEditDt": iso(edited),
            }
        with self.store.lock:
            # One copy per record instead of put()'s two; Store has no bulk insert.
            self.store.load({**self.store.dump(), **new})
            self._order = None
        if self.persist_path:
            self.committed(0)


def _canonical_key(key: str) -> str:
    for name in ("CustomerId", *TEXT_FIELDS, "EUCitizen"):
        if key.lower() == name.lower():
            return name
    return key


def _one(record: dict[str, Any]) -> Response:
    return JSONResponse({"RecordCount": 1, "Data": [record]})


_FIRST = (
    "Pat", "Aroha", "James", "Mere", "Liam", "Olivia", "Noah", "Charlotte", "Wiremu", "Isla",
    "Jack", "Amelia", "Oliver", "Ruby", "Leo", "Sophie", "Hemi", "Grace", "Mason", "Ella",
)  # fmt: skip
_LAST = (
    "Benatar", "Smith", "Williams", "Brown", "Wilson", "Taylor", "Ngata", "Jones", "Walker", "Tane",
    "Harris", "Martin", "Clarke", "Thompson", "White", "Young", "Parata", "King", "Lee", "Scott",
)  # fmt: skip
_COMPANIES = ("Riverlands Cafe", "Kauri Hardware", "Harbour Florists", "Southern Books", "Tui Motors")
_STREETS = ("Riverlands Road", "Queen Street", "High Street", "Victoria Avenue", "Beach Road", "Kauri Lane")
_TOWNS = ("Perth", "Auckland", "Wellington", "Christchurch", "Hamilton", "Dunedin", "Nelson")
