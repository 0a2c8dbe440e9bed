"""The adapter contract: everything the engine needs from a point-of-sale system.

An adapter declares itself with class attributes (name, capabilities, settings model,
canonical fields it can hold, the webhook events it handles and the ones it knowingly
ignores) and overrides a few small hooks. Vendor protocol stays inside the adapter's
folder; errors leave it as the types in `bridge.adapters.errors`.

Hooks are synchronous: they run in Celery workers. Every adapter talks HTTP through an
`httpx.Client` built by `http_client()`, whose transport is the seam tests use to put a
sandbox behind it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.adapters.errors import AdapterError, ChangedError, NotFoundError, PayloadError, SignatureError
from bridge.canonical import Values


class Capability(StrEnum):
    WEBHOOKS = "webhooks"
    POLLING = "polling"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    BULK = "bulk"
    READ_ONLY = "read_only"
    ORDERS = "orders"
    # Updates carry the version they were based on and the system refuses a stale one, so
    # a till edit made since our last read cannot be overwritten. Without it the engine
    # re-reads the record before every update and folds in what changed at the till.
    VERSIONED_WRITES = "versioned_writes"


class EventKind(StrEnum):
    UPSERT = "upsert"  # the record (or a re-read of it) is the new truth for that system
    DELETE = "delete"
    MERGE = "merge"  # several records became one (Square merges)
    TRIGGER = "trigger"  # "something changed": re-read the record through the API
    ORDER = "order"  # an order that points at a customer (LS One)


class AdapterSettings(BaseSettings):
    """Settings every adapter has. Environment prefix: `POSBRIDGE_<SYSTEM>_`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_file_encoding="utf-8")

    base_url: str = ""
    timeout_s: float = 10.0
    poll_interval_s: float = 60.0
    poll_overlap_s: float = 120.0
    # For sources that cannot sign their webhooks: a secret carried in the URL path.
    webhook_path_token: SecretStr | None = None


@dataclass(frozen=True)
class ExternalRecord:
    """A customer as one system stores it, plus the metadata the engine orders by."""

    external_id: str
    native: dict[str, Any]
    version: int | None = None
    updated_at: datetime | None = None
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "native": self.native,
            "version": self.version,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "deleted": self.deleted,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExternalRecord:
        at = data.get("updated_at")
        return cls(
            external_id=str(data["external_id"]),
            native=dict(data.get("native") or {}),
            version=data.get("version"),
            updated_at=datetime.fromisoformat(at) if at else None,
            deleted=bool(data.get("deleted")),
        )


@dataclass(frozen=True)
class ExternalOrder:
    """An order that names a customer; systems with the ORDERS capability produce these."""

    external_id: str
    customer_ref: str | None
    status: str
    updated_at: datetime | None
    native: dict[str, Any]
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "customer_ref": self.customer_ref,
            "status": self.status,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "native": self.native,
            "reference": self.reference,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExternalOrder:
        at = data.get("updated_at")
        return cls(
            external_id=str(data["external_id"]),
            customer_ref=data.get("customer_ref"),
            status=str(data.get("status") or ""),
            updated_at=datetime.fromisoformat(at) if at else None,
            native=dict(data.get("native") or {}),
            reference=data.get("reference"),
        )


@dataclass(frozen=True)
class InboundEvent:
    """One change reported by a system, as stored in the inbox."""

    event_id: str
    kind: EventKind
    external_id: str
    event_type: str
    record: ExternalRecord | None = None
    order: ExternalOrder | None = None
    occurred_at: datetime | None = None
    merged_from: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "event_id": self.event_id,
                "kind": self.kind.value,
                "external_id": self.external_id,
                "event_type": self.event_type,
                "record": self.record.to_json() if self.record else None,
                "order": self.order.to_json() if self.order else None,
                "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
                "merged_from": list(self.merged_from),
            },
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> InboundEvent:
        data = json.loads(text)
        at = data.get("occurred_at")
        return cls(
            event_id=data["event_id"],
            kind=EventKind(data["kind"]),
            external_id=data["external_id"],
            event_type=data["event_type"],
            record=ExternalRecord.from_json(data["record"]) if data.get("record") else None,
            order=ExternalOrder.from_json(data["order"]) if data.get("order") else None,
            occurred_at=datetime.fromisoformat(at) if at else None,
            merged_from=tuple(data.get("merged_from") or ()),
        )


# Real POS payloads nest a handful of levels. Far deeper input is an attack on the
# parser and on every later recursive walk (serialising, copying, mapping), which would
# fail with RecursionError well after the request had been accepted.
MAX_JSON_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Postgres JSON columns refuse them later.
    raise PayloadError(f"body is not JSON: {name} is not a JSON number")


def load_json_body(body: bytes) -> Any:
    """Parse an untrusted JSON webhook body, or raise PayloadError (400) saying why.

    Refuses what Python's parser accepts but the rest of the bridge cannot carry:
    invalid UTF-8, nesting deeper than MAX_JSON_DEPTH, NaN/Infinity, integers too long
    to convert, and strings holding NUL or unpaired surrogates (no database text column
    can store those).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PayloadError(f"body is not valid UTF-8 (bad byte at offset {err.start})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise PayloadError(
            f"body is not JSON we accept: nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except ValueError as err:  # JSONDecodeError, and int() refusing thousands of digits
        raise PayloadError(f"body is not JSON: {err}") from None
    _check_json_value(value)
    return value


def _check_json_value(value: Any) -> None:
    # Iterative, so that checking depth cannot itself exhaust the stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise PayloadError(f"body is not JSON we accept: nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise PayloadError(f"body is not JSON we accept: a string {problem}")


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored as text, or None: NUL and lone surrogates."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate"
    return None


@dataclass(frozen=True)
class WebhookRequest:
    """What an adapter sees of an incoming webhook. Header names are lower-case."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    path_token: str | None = None

    def json(self) -> Any:
        """The body as JSON, refusing hostile input with PayloadError (see load_json_body)."""
        return load_json_body(self.body)


@dataclass
class WebhookBatch:
    events: list[InboundEvent] = field(default_factory=list)
    # Event types the adapter recognised but has nothing to do for, and unknown ones:
    # both are acknowledged (so the vendor stops retrying) and logged.
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


class Adapter:
    """Base class. Subclasses set the class attributes and override the hooks they support."""

    name: ClassVar[str]
    title: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings
    # Canonical fields this system can hold; the projection to it is exactly these.
    fields: ClassVar[frozenset[str]] = frozenset()
    handled_events: ClassVar[frozenset[str]] = frozenset()
    ignored_events: ClassVar[frozenset[str]] = frozenset()
    max_bulk: ClassVar[int] = 1
    # "module:Class" of this system's simulator (bridge.sandbox.Sandbox subclass).
    sandbox_class: ClassVar[str | None] = None

    def __init__(self, settings: AdapterSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.transport = transport
        self._client: httpx.Client | None = None
        # A directory of this system's own under the var dir, set by the runtime, for state
        # that must outlive the process (see `bridge.adapters.slots`); None: keep nothing.
        self.state_dir: Path | None = None

    # -- plumbing ---------------------------------------------------------------------
    def http_client(self) -> httpx.Client:
        """One pooled client per adapter instance (per worker process)."""
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                transport=self.transport,
                headers=self.default_headers(),
            )
        return self._client

    def default_headers(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def writable(self) -> bool:
        return Capability.CREATE in self.capabilities and Capability.READ_ONLY not in self.capabilities

    # -- webhooks ---------------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise SignatureError unless the request provably comes from the system."""
        token = self.settings.webhook_path_token
        if token is None:
            raise SignatureError(f"{self.name}: no way to authenticate webhooks is configured")
        if not request.path_token or not hmac.compare_digest(
            request.path_token.encode(), token.get_secret_value().encode()
        ):
            raise SignatureError("path token does not match")

    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------
    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        """Every record changed at or after `since` (None: everything), oldest first if possible."""
        raise NotImplementedError

    def poll_orders(self, since: datetime | None) -> Iterator[ExternalOrder]:
        raise NotImplementedError

    def fetch(self, external_id: str) -> ExternalRecord | None:
        raise NotImplementedError

    def estimate_total(self) -> int | None:
        """How many customers a full read would yield, if the system says cheaply (progress/ETA)."""
        return None

    def probe(self) -> None:
        """A cheap authenticated call; raises AuthError while credentials are refused."""
        raise NotImplementedError

    # -- writes -----------------------------------------------------------------------
    def preassigned_id(self, idempotency_key: str) -> str | None:
        """The id a create with this key will get, when the caller chooses it (Fieldpine)."""
        return None

    def create(self, native: dict[str, Any], idempotency_key: str) -> ExternalRecord:
        raise NotImplementedError

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        raise NotImplementedError

    def update_unless_changed(
        self, external_id: str, native: dict[str, Any], unchanged: Callable[[ExternalRecord], bool]
    ) -> ExternalRecord:
        """Update only if the record still is what we last knew (`unchanged` says so).

        For systems without VERSIONED_WRITES, whose updates overwrite whatever is there: a
        till edit made since our last read would be lost. Raises ChangedError carrying the
        record when it changed, NotFoundError when it is gone. This default reads and then
        writes, which leaves a short window; override it where the system can make the two
        one step (OnSite reads and writes under the record's lock).
        """
        current = self.fetch(external_id)
        if current is None:
            raise NotFoundError(f"{self.name} record {external_id} is gone")
        if not unchanged(current):
            raise ChangedError(f"{self.name} record {external_id} changed since our last read", current)
        return self.update(external_id, native, None)

    def delete(self, external_id: str, version: int | None) -> None:
        raise NotImplementedError

    def find_existing(self, values: Values, idempotency_key: str) -> ExternalRecord | None:
        """After a create whose outcome is unknown: the record it made, if it made one."""
        raise NotImplementedError

    def create_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[ExternalRecord | Exception]:
        """Bulk create (key, native) pairs; per-item result or error. Default: one by one."""
        results: list[ExternalRecord | Exception] = []
        for key, native in items:
            try:
                results.append(self.create(native, key))
            except AdapterError as err:
                results.append(err)
        return results

    # -- mapping (pure) ---------------------------------------------------------------
    def to_canonical(self, native: Mapping[str, Any]) -> Values:
        """Native record → canonical values, exactly the keys in `fields`."""
        raise NotImplementedError

    def from_canonical(self, values: Values) -> dict[str, Any]:
        """Canonical values (keys of `fields`) → the native payload for create/update."""
        raise NotImplementedError
