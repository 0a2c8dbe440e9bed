"""A Lightspeed OnSite server, close enough to run the vendor's own example scripts.

What it honours (POS-APIS.md, OnSite section, and the seed document):
- basic auth, `X-PAPPID` (private app id) and a `User-Agent` that starts with the app id;
- server sessions by the `LS_SERVER_SESSION_ID` cookie, counted against a seat limit:
  a client that never sends its cookie back opens a session per request and soon gets
  403; logout and idle expiry free seats; a stale cookie gets 401 (session expired);
- customers: list (count/offset, streamed), create (201, `customer_id` C-<id>), get,
  LOCK -> sparse PUT -> UNLOCK (a PUT without the caller's lock fails; another
  session's lock gives 403 with an error document), photo add/get/replace;
- search: GET lists the columns and filters, POST runs a paged, sorted, filtered query
  and answers rows of cells, each row linking to its customer;
- errors as OnSite's `<error class=... type=...><localizable_message>` document.
OnSite sends no webhooks (integrations poll it), so this sandbox emits none.
Incoming XML is parsed with entities, DTDs and network access off.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from lxml import etree
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bridge.adapters.onsite.models import UnsafeXmlError, parse_xml
from bridge.sandbox.kit import Sandbox

DEMO_USERS: Mapping[str, str] = {"lightspeed": "admin"}
DEMO_APP_IDS: frozenset[str] = frozenset({"com.lightspeed.onsite.demo"})
DEMO_PRIVATE_IDS: frozenset[str] = frozenset({"12345678-90ab-cdef-1234-567890abcdef"})
SESSION_COOKIE = "LS_SERVER_SESSION_ID"
PHONE_SLOTS = 4
PHONE_TYPES = frozenset({"", "home", "work", "mobile", "other", "fax", "pager"})
ADDRESS_KEYS = ("address1", "address2", "city", "state", "country", "zip")
TEXT_KEYS = ("company", "email", "homepage", "birthday", "customer_id", "import_id", "notes")
_BIRTHDAY = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T[\d:.]+)?$")

# (type, class) of each error the server reports; the class names follow OnSite's
# Java-style naming, the types are what clients branch on.
ERROR_CLASSES: Mapping[int, str] = {
    400: "com.lightspeed.web.api.BadRequestException",
    401: "com.lightspeed.web.api.AuthenticationException",
    403: "com.lightspeed.web.api.ForbiddenException",
    404: "com.lightspeed.web.api.NotFoundException",
    405: "com.lightspeed.web.api.MethodNotAllowedException",
    406: "com.lightspeed.web.api.NotAcceptableException",
    429: "com.lightspeed.web.api.TooManyRequestsException",
    500: "com.lightspeed.web.api.InternalServerException",
    503: "com.lightspeed.web.api.ServiceUnavailableException",
}

COLUMNS: tuple[tuple[str, str, bool], ...] = (
    # (id suffix, plain name, shown by default)
    ("id", "ID", False),
    ("name", "Name", True),
    ("email", "Email", True),
    ("phone", "Phone", True),
    ("account_status", "Account Status", False),
    ("category", "Category", False),
    ("city", "City", False),
    ("country", "Country", False),
    ("salesperson", "Salesperson", False),
    ("state_province", "State/Province", False),
    ("company", "Company", False),
)

FILTERS: tuple[tuple[str, str, str], ...] = (
    ("account_status", "Account Status", "STRING"),
    ("address", "Address", "STRING"),
    ("customer", "Customer", "STRING"),
    ("category", "Category", "STRING"),
    ("city", "City", "STRING"),
    ("country", "Country", "STRING"),
    ("currency", "Currency", "STRING"),
    ("customer_id", "Customer ID", "STRING"),
    ("created_date", "Created Date", "DATE"),
    ("email", "Email", "STRING"),
    ("groups", "Groups", "STRING"),
    ("home_page", "Home Page", "STRING"),
    ("company", "Company", "BOOLEAN"),
    ("name", "Name", "STRING"),
    ("new_import", "New Import", "BOOLEAN"),
    ("new_updates", "New Updates", "BOOLEAN"),
    ("notes", "Notes", "STRING"),
    ("merged", "Merged", "BOOLEAN"),
    ("modified_date", "Modified Date", "DATE"),
    ("phone", "Phone", "STRING"),
    ("referred_by", "Referred By", "STRING"),
    ("salesperson", "Salesperson", "STRING"),
    ("state_province", "State/Province", "STRING"),
    ("tax_code", "Tax Code", "STRING"),
    ("tax_status", "Tax Status", "STRING"),
    ("terms", "Terms", "STRING"),
    ("zip_postal_code", "Zip/Postal Code", "STRING"),
)
COLUMN_PREFIX = "lsserver.search.column."
FILTER_PREFIX = "lsserver.search.filters."


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


@dataclass
class _Session:
    user: str
    last_seen: float


# -- record helpers ------------------------------------------------------------------------


def full_name(record: Mapping[str, Any]) -> str:
    return " ".join(p for p in (record["first"], record["last"]) if p)


def main_phone(record: Mapping[str, Any]) -> str:
    phones = sorted(record["phone_numbers"], key=lambda p: p["list_order"])
    for phone in phones:
        if phone["main"] and phone["number"]:
            return str(phone["number"])
    return next((str(p["number"]) for p in phones if p["number"]), "")


def blank_record(record_id: int, now: str) -> dict[str, Any]:
    return {
        "id": record_id,
        "created": now,
        "modified": now,
        "first": "",
        "last": "",
        "company": "",
        "email": "",
        "homepage": "",
        "phone_numbers": [
            {"id": slot, "main": False, "type": "", "list_order": slot, "number": ""}
            for slot in range(1, PHONE_SLOTS + 1)
        ],
        "photo": False,
        "is_company": False,
        "billing": dict.fromkeys(ADDRESS_KEYS, ""),
        "shipping": dict.fromkeys(ADDRESS_KEYS, ""),
        "credit_hold": False,
        "new_import": False,
        "new_update": False,
        "birthday": "",
        "credit_limit": "0.00",
        "customer_id": f"C-{record_id}",
        "import_id": "",
        "notes": "",
    }


def _bool(text: str, where: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0", ""):
        return False
    raise ApiError(400, "lsserver.error.invalid_value", f"{where}: {text!r} is not a boolean")


def _text_of(node: etree._Element) -> str:
    return (node.text or "").strip()


def patch_from_xml(root: etree._Element) -> dict[str, Any]:
    """The fields a (sparse) customer document sets; absent elements are left alone."""
    if root.tag != "customer":
        raise ApiError(400, "lsserver.error.invalid_document", f"expected <customer>, got <{root.tag}>")
    patch: dict[str, Any] = {}
    for child in root:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag == "name":
            for part in child:
                if part.tag in ("first", "last"):
                    patch[str(part.tag)] = _text_of(part)
        elif tag in TEXT_KEYS:
            patch[tag] = _text_of(child)
        elif tag == "is_company":
            patch["is_company"] = _bool(_text_of(child), "is_company")
        elif tag == "phone_numbers":
            slots: dict[int, dict[str, Any]] = {}
            for position, phone in enumerate(child.findall("phone_number"), start=1):
                raw_id = phone.get("id")
                try:
                    slot = int(raw_id) if raw_id is not None else position
                except ValueError as err:
                    raise ApiError(400, "lsserver.error.invalid_value", f"phone id {raw_id!r}") from err
                if not 1 <= slot <= PHONE_SLOTS:
                    raise ApiError(
                        400, "lsserver.error.invalid_value", f"phone_number id {slot} is not 1..{PHONE_SLOTS}"
                    )
                fields: dict[str, Any] = {}
                for part in phone:
                    if part.tag == "main":
                        fields["main"] = _bool(_text_of(part), "phone main")
                    elif part.tag in ("type", "number"):
                        fields[str(part.tag)] = _text_of(part)
                    elif part.tag == "list_order":
                        try:
                            fields["list_order"] = int(_text_of(part) or slot)
                        except ValueError as err:
                            raise ApiError(400, "lsserver.error.invalid_value", "list_order") from err
                slots[slot] = fields
            patch["phone_numbers"] = slots
        elif tag in ("billing", "shipping"):
            address = child.find("address")
            if address is not None:
                patch[tag] = {str(part.tag): _text_of(part) for part in address if part.tag in ADDRESS_KEYS}
        # Anything else (credit_status, account_status, ...) is read-only here.
    return patch


def apply_patch(record: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key in ("first", "last", *TEXT_KEYS, "is_company"):
        if key in patch:
            record[key] = patch[key]
    for key in ("billing", "shipping"):
        if key in patch:
            record[key].update({k: v for k, v in patch[key].items() if k in ADDRESS_KEYS})
    slots: Mapping[int, Mapping[str, Any]] = patch.get("phone_numbers") or {}
    phones = record["phone_numbers"]
    for slot, fields in slots.items():
        phone = phones[slot - 1]
        for key in ("type", "number", "list_order"):
            if key in fields:
                phone[key] = fields[key]
        if fields.get("main"):
            for other in phones:
                other["main"] = other is phone
        elif "main" in fields:
            phone["main"] = False
    # A number is always marked main when none is: OnSite shows one main number.
    if not any(p["main"] and p["number"] for p in phones):
        for p in phones:
            p["main"] = False
        first = next((p for p in sorted(phones, key=lambda p: p["list_order"]) if p["number"]), None)
        if first is not None:
            first["main"] = True


def validate(record: Mapping[str, Any]) -> None:
    birthday = record["birthday"]
    if birthday:
        if not _BIRTHDAY.match(birthday):
            raise ApiError(400, "lsserver.error.invalid_value", f"birthday {birthday!r} is not YYYY-MM-DD")
        try:
            date.fromisoformat(birthday[:10])
        except ValueError as err:
            raise ApiError(400, "lsserver.error.invalid_value", f"birthday {birthday!r}: {err}") from err
    for phone in record["phone_numbers"]:
        if phone["type"] not in PHONE_TYPES:
            raise ApiError(400, "lsserver.error.invalid_value", f"phone type {phone['type']!r} is unknown")


# -- XML rendering -------------------------------------------------------------------------


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    node = etree.SubElement(parent, tag, attrs)
    if text:
        node.text = text
    return node


def _ref(parent: etree._Element, tag: str, base: str, path: str, id_: str = "0") -> etree._Element:
    return _sub(parent, tag, id=id_, uri=f"{base}{path}{id_}/")


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def render_customer(record: Mapping[str, Any], base: str, *, full: bool = True) -> etree._Element:
    rid = record["id"]
    uri = f"{base}api/customers/{rid}/"
    root = etree.Element("customer", id=str(rid), uri=uri)
    if full:
        _sub(root, "created", record["created"])
        _sub(root, "modified", record["modified"])
    name = _sub(root, "name")
    _sub(name, "first", record["first"])
    _sub(name, "last", record["last"])
    for key in ("company", "email", "homepage"):
        _sub(root, key, record[key])
    phones = _sub(root, "phone_numbers")
    for phone in record["phone_numbers"]:
        node = _sub(phones, "phone_number", id=str(phone["id"]))
        _sub(node, "main", _bool_text(phone["main"]))
        _sub(node, "type", phone["type"])
        _sub(node, "list_order", str(phone["list_order"]))
        _sub(node, "number", phone["number"])
    if record["photo"]:
        _sub(root, "photo", uri=f"{uri}customer_photo/")
    else:
        _sub(root, "photo")
    _sub(root, "is_company", _bool_text(record["is_company"]))
    if not full:
        return root
    for kind in ("billing", "shipping"):
        address = _sub(_sub(root, kind), "address")
        for key in ADDRESS_KEYS:
            _sub(address, key, record[kind][key])
    for key in ("credit_hold", "new_import", "new_update"):
        _sub(root, key, _bool_text(record[key]))
    _sub(root, "birthday", record["birthday"])
    _sub(root, "credit_limit", record["credit_limit"])
    _sub(root, "customer_id", record["customer_id"])
    _sub(root, "credit_status", uri=f"{uri}credit_status/")
    _sub(root, "ar_balance", uri=f"{uri}ar_balance/")
    _sub(root, "import_id", record["import_id"])
    status = _ref(root, "account_status", base, "api/setup/account_statuses/")
    _sub(status, "name", "None")
    _sub(status, "list_order", "0")
    _sub(root, "user")
    category = _ref(root, "customer_category", base, "api/setup/customer_categories/")
    _sub(category, "name", "None")
    _sub(_sub(category, "discount"), "percent", "0.000")
    _sub(category, "pricing_level")
    _sub(_ref(root, "customer_referredby", base, "api/setup/customer_referredbys/"), "name", "None")
    _ref(root, "currency", base, "api/setup/currencies/")
    _ref(root, "tax_code", base, "api/tax_codes/")
    _ref(root, "tax_exemption", base, "api/setup/tax_exemptions/")
    _ref(root, "terms", base, "api/setup/terms/")
    language = _sub(root, "language")
    _sub(language, "id", "0")
    _sub(language, "language_name", "English")
    _sub(root, "notes", record["notes"])
    _sub(_sub(root, "merged_to"), "customer")
    return root


def _localizable(parent: etree._Element, type_: str, message: str) -> None:
    node = _sub(parent, "localizable_message", type=type_)
    _sub(node, "fields")
    _sub(node, "plain_message", message)


def xml_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def error_document(status: int, type_: str, message: str) -> bytes:
    root = etree.Element("error", {"class": ERROR_CLASSES.get(status, ERROR_CLASSES[500]), "type": type_})
    _localizable(root, type_, message)
    return xml_bytes(root)


# -- search ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<and>AND)\b|(?P<field>[A-Za-z_][\w.]*)|(?P<op>>=|<=|!=|<>|=|<|>)"
    r"|'(?P<str>(?:[^']|'')*)'|(?P<bare>[^\s']+))",
    re.IGNORECASE,
)
_WORD_OPS = frozenset({"CONTAINS", "STARTS_WITH", "ENDS_WITH"})


@dataclass(frozen=True)
class Condition:
    filter: str
    op: str
    value: str


def parse_filters(text: str) -> list[Condition]:
    """`lsserver.search.filters.<id> <op> '<value>' [AND ...]`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ApiError(400, "lsserver.error.invalid_search", f"cannot parse filters near {text[pos:]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = value.replace("''", "'")
        elif kind == "field" and value.upper() in _WORD_OPS:
            kind = "op"
            value = value.upper()
        tokens.append((kind, value))
    conditions: list[Condition] = []
    index = 0
    while index < len(tokens):
        if conditions:
            if tokens[index][0] != "and":
                raise ApiError(400, "lsserver.error.invalid_search", "conditions must be joined by AND")
            index += 1
        chunk = tokens[index : index + 3]
        if (
            len(chunk) < 3
            or chunk[0][0] != "field"
            or chunk[1][0] != "op"
            or chunk[2][0] not in ("str", "bare", "field")
        ):
            raise ApiError(
                400, "lsserver.error.invalid_search", f"expected '<filter> <op> <value>' in {text!r}"
            )
        name = chunk[0][1]
        if not name.startswith(FILTER_PREFIX) or name[len(FILTER_PREFIX) :] not in _FILTER_TYPES:
            raise ApiError(400, "lsserver.error.invalid_search", f"unknown filter {name!r}")
        op = "!=" if chunk[1][1] == "<>" else chunk[1][1]
        conditions.append(Condition(name[len(FILTER_PREFIX) :], op, chunk[2][1]))
        index += 3
    return conditions


_FILTER_TYPES: Mapping[str, str] = {key: kind for key, _, kind in FILTERS}


def _filter_values(record: Mapping[str, Any], key: str) -> list[Any]:
    billing = record["billing"]
    getters: dict[str, Callable[[], list[Any]]] = {
        "name": lambda: [full_name(record), record["company"]],
        "customer": lambda: [full_name(record), record["company"], record["customer_id"], record["email"]],
        "email": lambda: [record["email"]],
        "phone": lambda: [p["number"] for p in record["phone_numbers"] if p["number"]],
        "customer_id": lambda: [record["customer_id"]],
        "home_page": lambda: [record["homepage"]],
        "notes": lambda: [record["notes"]],
        "address": lambda: [billing["address1"], billing["address2"]],
        "city": lambda: [billing["city"]],
        "country": lambda: [billing["country"]],
        "state_province": lambda: [billing["state"]],
        "zip_postal_code": lambda: [billing["zip"]],
        "company": lambda: [record["is_company"]],
        "new_import": lambda: [record["new_import"]],
        "new_updates": lambda: [record["new_update"]],
        "merged": lambda: [False],
        "created_date": lambda: [datetime.fromisoformat(record["created"])],
        "modified_date": lambda: [datetime.fromisoformat(record["modified"])],
    }
    getter = getters.get(key)
    return getter() if getter else ["None"]


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "CONTAINS":
        return bool(right in left)
    if op == "STARTS_WITH":
        return bool(left.startswith(right))
    if op == "ENDS_WITH":
        return bool(left.endswith(right))
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return ops[op](left, right)


class OnSiteSandbox(Sandbox):
    system: ClassVar[str] = "onsite"

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        app_ids: Collection[str] | None = None,
        private_app_ids: Collection[str] | None = None,
        seat_limit: int = 5,
        session_idle_timeout_s: float = 900.0,
        timezone: str = "UTC",
        **kwargs: Any,
    ) -> None:
        self.users: Mapping[str, str] = dict(users) if users is not None else dict(DEMO_USERS)
        self.app_ids = frozenset(app_ids) if app_ids is not None else DEMO_APP_IDS
        self.private_app_ids = frozenset(private_app_ids) if private_app_ids is not None else DEMO_PRIVATE_IDS
        self.seat_limit = seat_limit
        self.session_idle_timeout_s = session_idle_timeout_s
        self.zone = ZoneInfo(timezone)
        self.sessions: dict[str, _Session] = {}
        self.locks: dict[int, str] = {}
        self.photos: dict[int, tuple[bytes, str]] = {}
        super().__init__(**kwargs)

    @classmethod
    def for_demo(cls, webhook_url: str) -> OnSiteSandbox:
        # The demo and chaos stacks run four worker processes, each with its session, and
        # the checker reads with a fifth. A session whose opening answer was lost (a chaos
        # fault) holds its seat until it idles out (15 min), and with exactly five seats
        # one such leak left the checker locked out (2026-12-05, sandbox_faults seed 7).
        # A licence sized with spare seats, as deploy/README.md advises.
        return cls(webhook_url=webhook_url, seat_limit=8)

    def adapter_env(self, base_url: str) -> dict[str, str]:
        user, password = sorted(self.users.items())[0]
        return {
            "base_url": base_url,
            "username": user,
            "password": password,
            "app_id": sorted(self.app_ids)[0],
            "private_app_id": sorted(self.private_app_ids)[0],
        }

    # -- kit hooks ---------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        every = ["GET", "POST", "PUT", "DELETE", "PATCH", "LOCK", "UNLOCK"]
        return [
            Route("/api/customers/", self._api(self._customers), methods=every),
            Route("/api/customers/search/", self._api(self._search), methods=every),
            Route("/api/customers/{id:int}/", self._api(self._customer), methods=every),
            Route("/api/customers/{id:int}/customer_photo/", self._api(self._photo), methods=every),
            Route("/api/sessions/current/logout/", self._api(self._logout), methods=every),
            Route("/api/{rest:path}", self._api(self._not_found), methods=every),
        ]

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(
            error_document(status, code, message), status_code=status, media_type="application/xml"
        )

    def rate_limited(self) -> Response:
        return self.error(429, "lsserver.error.too_many_requests", "too many requests")

    def ground_truth(self) -> list[dict[str, Any]]:
        records = list(self.store.dump().values())
        for record in records:
            locked_by = self.locks.get(record["id"])
            record["locked"] = locked_by is not None
        return sorted(records, key=lambda r: int(r["id"]))

    def on_reset(self) -> None:
        self.sessions.clear()
        self.locks.clear()
        self.photos.clear()

    def extra_control_routes(self) -> list[BaseRoute]:
        async def locks(request: Request) -> Response:
            return JSONResponse({"locks": {str(k): v for k, v in self.locks.items()}})

        async def sessions(request: Request) -> Response:
            self._purge_expired()
            return JSONResponse({"open": len(self.sessions), "seat_limit": self.seat_limit})

        async def expire(request: Request) -> Response:
            return JSONResponse({"expired": self.expire_sessions()})

        return [
            Route("/locks", locks, methods=["GET"]),
            Route("/sessions", sessions, methods=["GET"]),
            Route("/sessions/expire", expire, methods=["POST"]),
        ]

    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        fields = dict(payload.get("fields") or {})
        if isinstance(fields.get("name"), Mapping):
            fields.update({k: fields["name"][k] for k in ("first", "last") if k in fields["name"]})
        patch: dict[str, Any] = {k: fields[k] for k in ("first", "last", *TEXT_KEYS) if k in fields}
        if "is_company" in fields:
            patch["is_company"] = bool(fields["is_company"])
        for kind in ("billing", "shipping"):
            if kind in fields:
                patch[kind] = dict(fields[kind])
        if "phone_numbers" in fields:
            patch["phone_numbers"] = {
                int(p.get("id") or n): {k: p[k] for k in ("main", "type", "number") if k in p}
                for n, p in enumerate(fields["phone_numbers"], start=1)
            }
        record_id = payload.get("id")
        try:
            if record_id is None:
                return self._create(patch)
            rid = int(record_id)
            if rid in self.locks:
                raise ValueError(f"customer {rid} is locked by an API session")
            return self._update(rid, patch)
        except ApiError as err:
            if err.status == 404:
                raise KeyError(str(record_id)) from err
            raise ValueError(err.message) from err

    # -- state -------------------------------------------------------------------------
    def now(self) -> str:
        return datetime.now(UTC).astimezone(self.zone).replace(tzinfo=None).isoformat(timespec="microseconds")

    def lock_owners(self) -> dict[int, str]:
        return dict(self.locks)

    def open_sessions(self) -> int:
        self._purge_expired()
        return len(self.sessions)

    def expire_sessions(self) -> int:
        """Age every session past the idle timeout (what a long pause does)."""
        count = len(self.sessions)
        for session in self.sessions.values():
            session.last_seen = -1e12
        self._purge_expired()
        return count

    def set_photo(self, record_id: int, data: bytes, media_type: str = "image/jpeg") -> None:
        record = self._record(record_id)
        self.photos[record_id] = (data, media_type)
        record["photo"] = True
        record["modified"] = self.now()
        self.store.put(str(record_id), record)
        self.committed()

    def _end_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        for rid in [rid for rid, owner in self.locks.items() if owner == session_id]:
            del self.locks[rid]

    def _purge_expired(self) -> None:
        horizon = time.monotonic() - self.session_idle_timeout_s
        for sid in [sid for sid, s in self.sessions.items() if s.last_seen < horizon]:
            self._end_session(sid)

    def _record(self, record_id: int) -> dict[str, Any]:
        record = self.store.get(str(record_id))
        if record is None:
            raise ApiError(404, "lsserver.error.not_found", f"Customer {record_id} does not exist")
        return record

    def _check_customer_id(self, record: Mapping[str, Any]) -> None:
        code = record["customer_id"]
        for other in self.store.values():
            if other["id"] != record["id"] and code and other["customer_id"] == code:
                raise ApiError(400, "lsserver.error.duplicate", f"customer ID {code!r} is already in use")

    def _create(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        with self.store.lock:
            existing = self.store.keys()
            record_id = max((int(k) for k in existing), default=0) + 1
            record = blank_record(record_id, self.now())
            apply_patch(record, patch)
            if not record["customer_id"]:
                record["customer_id"] = f"C-{record_id}"
            validate(record)
            self._check_customer_id(record)
            stored = self.store.put(str(record_id), record)
        self.committed()
        return stored

    def _update(self, record_id: int, patch: Mapping[str, Any]) -> dict[str, Any]:
        record = self._record(record_id)
        code = record["customer_id"]
        apply_patch(record, patch)
        if not record["customer_id"]:
            # The customer ID is the record's handle at the till; it cannot be blanked.
            record["customer_id"] = code
        validate(record)
        self._check_customer_id(record)
        record["modified"] = self.now()
        stored = self.store.put(str(record_id), record)
        self.committed()
        return stored

    # -- request plumbing --------------------------------------------------------------
    def _authenticate(self, request: Request) -> str:
        import base64
        import binascii

        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        expected = self.users.get(user)
        if not user or expected is None or not secrets.compare_digest(expected, password):
            raise ApiError(401, "lsserver.error.authentication", "invalid user name or password")
        app_id = request.headers.get("user-agent", "").partition("/")[0]
        if app_id not in self.app_ids:
            raise ApiError(403, "lsserver.error.application_not_authorized", "unknown application id")
        if request.headers.get("x-pappid", "") not in self.private_app_ids:
            raise ApiError(403, "lsserver.error.application_not_authorized", "invalid private application id")
        return user

    def _session(self, request: Request, user: str) -> tuple[str, bool]:
        """The caller's session id, and whether it was opened by this request."""
        self._purge_expired()
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.sessions.get(cookie)
            if session is None or session.user != user:
                raise ApiError(401, "lsserver.error.session_expired", "the session has expired; log in again")
            session.last_seen = time.monotonic()
            return cookie, False
        if len(self.sessions) >= self.seat_limit:
            raise ApiError(
                403,
                "lsserver.error.no_available_seats",
                f"all {self.seat_limit} licensed seats are in use; log out unused sessions",
            )
        session_id = secrets.token_hex(16)
        self.sessions[session_id] = _Session(user=user, last_seen=time.monotonic())
        return session_id, True

    def _api(self, handler: Callable[[Request, str], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            opened: str | None = None
            try:
                user = self._authenticate(request)
                session_id, is_new = self._session(request, user)
                opened = session_id if is_new else None
                response: Response = await handler(request, session_id)
            except ApiError as err:
                response = self.error(err.status, err.type, err.message)
                if err.status == 401:
                    response.headers["WWW-Authenticate"] = 'Basic realm="Lightspeed OnSite"'
                    if err.type == "lsserver.error.session_expired":
                        response.delete_cookie(SESSION_COOKIE, path="/")
            if opened and opened in self.sessions:
                response.set_cookie(
                    SESSION_COOKIE,
                    opened,
                    path="/",
                    httponly=True,
                    secure=request.url.scheme == "https",
                )
            return response

        return endpoint

    def _base(self, request: Request) -> str:
        return str(request.base_url)

    def _xml(self, root: etree._Element, status: int = 200) -> Response:
        return Response(xml_bytes(root), status_code=status, media_type="application/xml")

    async def _body(self, request: Request) -> etree._Element:
        raw = await request.body()
        if not raw.strip():
            raise ApiError(400, "lsserver.error.invalid_document", "the request has no XML body")
        try:
            return parse_xml(raw)
        except UnsafeXmlError as err:
            raise ApiError(400, "lsserver.error.invalid_document", str(err)) from err

    def _not_allowed(self, request: Request) -> ApiError:
        return ApiError(405, "lsserver.error.method_not_allowed", f"{request.method} is not allowed here")

    # -- vendor routes -----------------------------------------------------------------
    async def _not_found(self, request: Request, session: str) -> Response:
        raise ApiError(404, "lsserver.error.not_found", f"no resource at {request.url.path}")

    async def _logout(self, request: Request, session: str) -> Response:
        if request.method != "POST":
            raise self._not_allowed(request)
        self._end_session(session)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def _customers(self, request: Request, session: str) -> Response:
        if request.method == "POST":
            patch = patch_from_xml(await self._body(request))
            record = self._create(patch)
            return self._xml(render_customer(record, self._base(request)), 201)
        if request.method != "GET":
            raise self._not_allowed(request)
        try:
            count = int(request.query_params.get("count", "0")) or None
            offset = int(request.query_params.get("offset", "0"))
        except ValueError as err:
            raise ApiError(400, "lsserver.error.invalid_value", "count and offset must be integers") from err
        if offset < 0 or (count is not None and count < 0):
            raise ApiError(400, "lsserver.error.invalid_value", "count and offset must not be negative")
        visible = sorted(self.store.visible(self.consistency_lag_s), key=lambda r: int(r["id"]))
        total = len(visible)
        window = visible[offset : offset + count if count is not None else None]
        base = self._base(request)

        def chunks() -> Iterator[bytes]:
            # Streamed record by record: a full listing of a big store never sits in memory.
            yield b'<?xml version="1.0" encoding="UTF-8"?>\n<customers total_count="%d">' % total
            for record in window:
                yield etree.tostring(render_customer(record, base, full=False))
            yield b"</customers>"

        return StreamingResponse(chunks(), media_type="application/xml")

    async def _customer(self, request: Request, session: str) -> Response:
        rid = int(request.path_params["id"])
        method = request.method
        if method == "GET":
            return self._xml(render_customer(self._record(rid), self._base(request)))
        if method == "LOCK":
            self._record(rid)
            owner = self.locks.get(rid)
            if owner is not None and owner != session:
                raise ApiError(
                    403, "lsserver.error.resource_locked", f"Customer {rid} is locked by another user"
                )
            self.locks[rid] = session
            return self._xml(render_customer(self._record(rid), self._base(request)))
        if method == "UNLOCK":
            self._record(rid)
            owner = self.locks.get(rid)
            if owner is not None and owner != session:
                raise ApiError(
                    403, "lsserver.error.resource_locked", f"Customer {rid} is locked by another user"
                )
            self.locks.pop(rid, None)
            return self._xml(render_customer(self._record(rid), self._base(request)))
        if method == "PUT":
            self._require_lock(rid, session)
            patch = patch_from_xml(await self._body(request))
            record = self._update(rid, patch)
            return self._xml(render_customer(record, self._base(request)))
        raise self._not_allowed(request)

    def _require_lock(self, rid: int, session: str) -> None:
        self._record(rid)
        owner = self.locks.get(rid)
        if owner is None:
            raise ApiError(
                403, "lsserver.error.not_locked", f"Customer {rid} must be locked before it is changed"
            )
        if owner != session:
            raise ApiError(403, "lsserver.error.resource_locked", f"Customer {rid} is locked by another user")

    async def _photo(self, request: Request, session: str) -> Response:
        rid = int(request.path_params["id"])
        if request.method == "GET":
            self._record(rid)
            if rid not in self.photos:
                raise ApiError(404, "lsserver.error.not_found", f"Customer {rid} has no photo")
            data, media_type = self.photos[rid]
            return Response(data, media_type=media_type)
        if request.method not in ("POST", "PUT"):
            raise self._not_allowed(request)
        self._require_lock(rid, session)
        data = await request.body()
        if not data:
            raise ApiError(400, "lsserver.error.invalid_document", "the photo is empty")
        self.set_photo(rid, data, request.headers.get("content-type") or "image/jpeg")
        if request.method == "PUT":
            return Response(status_code=204)
        return self._xml(render_customer(self._record(rid), self._base(request)), 201)

    async def _search(self, request: Request, session: str) -> Response:
        if request.method == "GET":
            return self._xml(self._criteria(self._base(request)))
        if request.method != "POST":
            raise self._not_allowed(request)
        root = await self._body(request)
        if root.tag != "search":
            raise ApiError(400, "lsserver.error.invalid_search", f"expected <search>, got <{root.tag}>")
        try:
            offset = int(root.findtext("page/offset") or 0)
            count = int(root.findtext("page/count") or 100)
        except ValueError as err:
            raise ApiError(
                400, "lsserver.error.invalid_search", "page offset/count must be integers"
            ) from err
        known = {key for key, _, _ in COLUMNS}
        columns = [c.get("id", "") for c in root.findall("search_query/columns/column")]
        columns = [c[len(COLUMN_PREFIX) :] if c.startswith(COLUMN_PREFIX) else c for c in columns]
        if not columns:
            columns = [key for key, _, shown in COLUMNS if shown]
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise ApiError(
                400, "lsserver.error.invalid_search", f"unknown column {COLUMN_PREFIX}{unknown[0]}"
            )
        sort_node = root.find("search_query/sort_by_column/column")
        sort_key = (sort_node.get("id", "") if sort_node is not None else "") or f"{COLUMN_PREFIX}name"
        sort_key = sort_key.removeprefix(COLUMN_PREFIX)
        if sort_key not in known:
            raise ApiError(400, "lsserver.error.invalid_search", f"cannot sort by {sort_key!r}")
        descending = (
            root.findtext("search_query/sort_by_column/order_by") or "ASC"
        ).strip().upper() == "DESC"
        conditions = parse_filters(root.findtext("search_query/filters") or "")
        matches = [r for r in self.store.visible(self.consistency_lag_s) if self._matches(r, conditions)]
        matches.sort(key=lambda r: (self._cell(r, sort_key).casefold(), int(r["id"])), reverse=descending)
        page = matches[offset : offset + count] if count > 0 else []
        return self._xml(self._results(len(matches), columns, page, self._base(request)))

    def _matches(self, record: Mapping[str, Any], conditions: list[Condition]) -> bool:
        for cond in conditions:
            kind = _FILTER_TYPES[cond.filter]
            right: Any
            if kind == "DATE":
                try:
                    right = datetime.fromisoformat(cond.value)
                except ValueError as err:
                    raise ApiError(
                        400, "lsserver.error.invalid_search", f"{cond.value!r} is not a date"
                    ) from err
                if right.tzinfo is not None:
                    right = right.astimezone(self.zone).replace(tzinfo=None)
                if cond.op in _WORD_OPS:
                    raise ApiError(400, "lsserver.error.invalid_search", f"{cond.op} needs a text filter")
                if not any(_compare(v, cond.op, right) for v in _filter_values(record, cond.filter)):
                    return False
            elif kind == "BOOLEAN":
                right = _bool(cond.value, cond.filter)
                if cond.op not in ("=", "!="):
                    raise ApiError(400, "lsserver.error.invalid_search", f"{cond.op} on a boolean filter")
                if not any(_compare(v, cond.op, right) for v in _filter_values(record, cond.filter)):
                    return False
            else:
                right = cond.value.casefold()
                values = [str(v).casefold() for v in _filter_values(record, cond.filter)]
                if not any(_compare(v, cond.op, right) for v in values):
                    return False
        return True

    def _cell(self, record: Mapping[str, Any], column: str) -> str:
        billing = record["billing"]
        cells: dict[str, Callable[[], str]] = {
            "id": lambda: str(record["customer_id"]),
            "name": lambda: full_name(record) or str(record["company"]),
            "email": lambda: str(record["email"]),
            "phone": lambda: main_phone(record),
            "account_status": lambda: "None",
            "category": lambda: "None",
            "city": lambda: str(billing["city"]),
            "country": lambda: str(billing["country"]),
            "salesperson": lambda: "",
            "state_province": lambda: str(billing["state"]),
            "company": lambda: str(record["company"]),
        }
        return cells[column]()

    def _results(
        self, total: int, columns: list[str], page: list[dict[str, Any]], base: str
    ) -> etree._Element:
        names = {key: name for key, name, _ in COLUMNS}
        root = etree.Element("data")
        _sub(_sub(root, "info"), "total_count", str(total))
        column_nodes = _sub(root, "columns")
        for key in columns:
            node = _sub(column_nodes, "column")
            _localizable(_sub(node, "name"), f"{COLUMN_PREFIX}{key}", names[key])
            _sub(node, "type", "STRING")
        rows = _sub(root, "rows")
        for record in page:
            row = _sub(rows, "row")
            link = _sub(_sub(row, "links"), "link")
            rid = record["id"]
            _sub(link, "customer", id=str(rid), uri=f"{base}api/customers/{rid}/")
            for key in columns:
                cell = _sub(row, "cell")
                _sub(cell, "type", "STRING")
                _sub(cell, "value", self._cell(record, key))
        return root

    def _criteria(self, base: str) -> etree._Element:
        root = etree.Element("search_criteria", uri=f"{base}api/customers/search/")
        columns = _sub(root, "columns")
        for key, name, shown in COLUMNS:
            node = _sub(columns, "column", id=f"{COLUMN_PREFIX}{key}")
            _localizable(_sub(node, "name"), f"{COLUMN_PREFIX}{key}", name)
            _sub(node, "type", "STRING")
            _sub(node, "required", "false")
            _sub(node, "default", _bool_text(shown))
            _sub(node, "sort_default", _bool_text(key == "name"))
            _sub(node, "sort_default_order_by", "ASC")
            _sub(node, "can_summarize", "false")
        filters = _sub(root, "filters")
        for key, name, kind in FILTERS:
            node = _sub(filters, "filter", id=f"{FILTER_PREFIX}{key}")
            _localizable(_sub(node, "name"), f"{FILTER_PREFIX}{key}", name)
            _sub(node, "type", kind)
        return root
