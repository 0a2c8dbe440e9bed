"""Lightspeed OnSite: XML over HTTPS, polled, with LOCK/PUT/UNLOCK updates.

OnSite has no webhooks, no record versions and no idempotency keys. Changes are found
by searching on the modified date; creates are made crash-safe by `find_existing`,
which looks the record up by e-mail, phone and name and accepts only a record whose
whole projection is the one we sent.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, overload
from zoneinfo import ZoneInfo

import httpx
from pydantic import ValidationError

from bridge.adapters.base import (
    Adapter,
    AdapterSettings,
    Capability,
    ExternalRecord,
    WebhookBatch,
    WebhookRequest,
)
from bridge.adapters.errors import (
    AdapterError,
    ChangedError,
    LockContentionError,
    NotFoundError,
    PermanentError,
    RetryableError,
    retry_read,
)
from bridge.adapters.onsite import mapping, webhook
from bridge.adapters.onsite.client import FILTER, OnSiteClient, quote
from bridge.adapters.onsite.models import Customer
from bridge.adapters.onsite.settings import OnSiteSettings
from bridge.adapters.slots import Slot, SlotsExhausted
from bridge.canonical import (
    COMPANY_NAME,
    EMAIL,
    FAMILY_NAME,
    GIVEN_NAME,
    Values,
    normalize,
)

log = logging.getLogger("posbridge.adapters.onsite")

# How many candidates per search `find_existing` checks; a create we lost is recent
# and unique on its whole projection, so a short list is plenty.
FIND_EXISTING_CANDIDATES = 25
# UNLOCK is tried again this soon after a transient failure (see `_release`).
UNLOCK_RETRY_PAUSES_S = (0.05, 0.2, 0.5)
# Where a process keeps its server session for the process that replaces it.
SESSION_KEY = "session"
# ... and the customers whose lock its session may hold: a process killed between LOCK and
# UNLOCK leaves the lock to that session, and the till cannot save the customer until the
# session that carries on gives it back.
LOCKS_KEY = "locks"


class PerInstanceFields:
    """`fields` that depend on settings (the customer code is mapped only when configured).

    On the class it reads as the fields every OnSite install holds; on an instance, as
    that instance's fields. The contract declares `fields` as a ClassVar; this keeps
    class-level readers working while letting the setting decide.
    """

    def __init__(self, default: frozenset[str]) -> None:
        self.default = default

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> frozenset[str]: ...
    @overload
    def __get__(self, obj: object, owner: type[Any]) -> frozenset[str]: ...
    def __get__(self, obj: object | None, owner: type[Any]) -> frozenset[str]:
        if obj is None:
            return self.default
        fields: frozenset[str] = getattr(obj, "_fields", self.default)
        return fields


class OnSiteAdapter(Adapter):
    name: ClassVar[str] = "onsite"
    title: ClassVar[str] = "Lightspeed OnSite"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.POLLING, Capability.CREATE, Capability.UPDATE}
    )
    settings_model: ClassVar[type[AdapterSettings]] = OnSiteSettings
    fields = PerInstanceFields(mapping.BASE_FIELDS)
    handled_events: ClassVar[frozenset[str]] = frozenset(webhook.HANDLERS)
    ignored_events: ClassVar[frozenset[str]] = webhook.IGNORED
    max_bulk: ClassVar[int] = 1
    sandbox_class: ClassVar[str | None] = "bridge.adapters.onsite.sandbox:OnSiteSandbox"

    def __init__(self, settings: AdapterSettings, transport: httpx.BaseTransport | None = None) -> None:
        if not isinstance(settings, OnSiteSettings):
            raise TypeError(f"OnSiteAdapter needs OnSiteSettings, got {type(settings).__name__}")
        super().__init__(settings, transport)
        self.config = settings
        # Locks of this process's session whose UNLOCK kept failing: given back at the
        # next call this process makes, since only our session can release them and the
        # till cannot save those customers until then.
        self._unreleased: set[int] = set()
        self.code_field = settings.customer_code_field
        self._fields = mapping.fields_for(self.code_field)
        self.zone = ZoneInfo(settings.server_timezone)
        self._onsite: OnSiteClient | None = None
        self._slot: Slot | None = None

    # -- plumbing ----------------------------------------------------------------------
    def default_headers(self) -> dict[str, str]:
        return {
            "User-Agent": f"{self.config.app_id}/{self.config.app_version}",
            "X-PAPPID": self.config.private_app_id.get_secret_value(),
            "Accept": "application/xml",
        }

    def http_client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.config.base_url,
                timeout=self.config.timeout_s,
                transport=self.transport,
                headers=self.default_headers(),
                auth=httpx.BasicAuth(self.config.username, self.config.password.get_secret_value()),
                verify=self.config.verify_tls,
            )
        return self._client

    @property
    def client(self) -> OnSiteClient:
        http = self.http_client()
        if self._onsite is None or self._onsite.http is not http:
            slot = self._session_slot()
            self._onsite = OnSiteClient(
                http,
                page_size=self.config.page_size,
                on_session=self._remember_session if slot is not None else None,
            )
            kept = slot.read(SESSION_KEY) if slot is not None else None
            if kept:
                # A predecessor in this slot died without logging out (kill -9, OOM): its
                # session still holds a seat, so carry it on instead of opening another.
                log.info("OnSite: resuming the session left in state slot %s", slot.index if slot else "-")
                self._onsite.resume(kept)
                held = slot.read(LOCKS_KEY) if slot is not None else None
                self._unreleased.update(int(i) for i in (held or "").split(",") if i.isdigit())
                if self._unreleased:
                    self._release_leftovers()
        return self._onsite

    def _note_locks(self, current: int | None = None) -> None:
        if self._slot is None:
            return
        held = self._unreleased | ({current} if current is not None else set())
        if held:
            self._slot.write(LOCKS_KEY, ",".join(str(i) for i in sorted(held)))
        else:
            self._slot.clear(LOCKS_KEY)

    def _session_slot(self) -> Slot | None:
        if self.state_dir is None:
            return None
        if self._slot is None or not self._slot.held:
            try:
                self._slot = Slot.claim(self.state_dir)
            except (OSError, SlotsExhausted) as err:
                log.warning("OnSite: no state slot, sessions will not survive a crash: %s", err)
                return None
        return self._slot

    def _remember_session(self, session_id: str | None) -> None:
        if self._slot is None:
            return
        if session_id:
            self._slot.write(SESSION_KEY, session_id)
        else:
            self._slot.clear(SESSION_KEY)

    def close(self) -> None:
        """Log out first: an abandoned session keeps a licence seat until it idles out."""
        if self._client is not None and self._onsite is not None and self._onsite.has_session:
            try:
                self._onsite.logout()
            except (AdapterError, httpx.HTTPError) as err:
                log.warning("OnSite logout failed; the session will idle out: %s", err)
        self._onsite = None
        if self._slot is not None:
            self._slot.release()
            self._slot = None
        super().close()

    # -- records -----------------------------------------------------------------------
    def _updated_at(self, modified: str | None) -> datetime | None:
        if not modified:
            return None
        try:
            when = datetime.fromisoformat(modified)
        except ValueError:
            log.warning("OnSite sent an unreadable modified time %r", modified)
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        return when.astimezone(UTC)

    def _record(self, customer: Customer) -> ExternalRecord:
        if customer.id is None:
            raise PermanentError("OnSite returned a customer without an id")
        return ExternalRecord(
            external_id=str(customer.id),
            native=customer.native(),
            version=None,
            updated_at=self._updated_at(customer.modified),
        )

    @staticmethod
    def _id(external_id: str) -> int | None:
        try:
            return int(external_id)
        except ValueError:
            return None

    def _server_time(self, when: datetime) -> str:
        aware = when if when.tzinfo else when.replace(tzinfo=UTC)
        return aware.astimezone(self.zone).replace(tzinfo=None).isoformat(timespec="microseconds")

    # -- webhooks: none ----------------------------------------------------------------
    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        return webhook.parse(request)

    # -- reads -------------------------------------------------------------------------
    def estimate_total(self) -> int | None:
        return self.client.list_customers(count=1).total_count

    def probe(self) -> None:
        self.client.list_customers(count=1)

    def fetch(self, external_id: str) -> ExternalRecord | None:
        customer_id = self._id(external_id)
        if customer_id is None:
            return None
        customer = self.client.get(customer_id)
        return self._record(customer) if customer is not None else None

    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        self._release_leftovers()
        # Search rows carry only a few columns (no modified time, no addresses), so
        # each match is re-read in full; pages are fetched lazily as the engine consumes.
        filters = f"{FILTER}modified_date >= {quote(self._server_time(since))}" if since else ""
        for customer_id in self.client.search_ids(filters):
            # Retried in place here only: a push reads under its lock, where a wait would
            # keep the till out, and has its own retry.
            customer = retry_read(functools.partial(self.client.get, customer_id))
            if customer is not None:  # gone between the search and the read
                yield self._record(customer)

    # -- writes ------------------------------------------------------------------------
    def _native_customer(self, native: Mapping[str, Any]) -> Customer:
        try:
            return Customer.from_native(dict(native))
        except ValidationError as err:
            raise PermanentError(f"not an OnSite customer payload: {err}") from err

    def create(self, native: dict[str, Any], idempotency_key: str) -> ExternalRecord:
        # OnSite has no idempotency key; `find_existing` covers a create whose answer is lost.
        return self._record(self.client.create(self._native_customer(native)))

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        return self._locked_update(external_id, native, None)

    def update_unless_changed(
        self, external_id: str, native: dict[str, Any], unchanged: Callable[[ExternalRecord], bool]
    ) -> ExternalRecord:
        # OnSite's lock makes read-compare-write one step: while we hold it the till cannot
        # save that customer, so nothing can slip in between the GET and the PUT.
        return self._locked_update(external_id, native, unchanged)

    def _locked_update(
        self,
        external_id: str,
        native: dict[str, Any],
        unchanged: Callable[[ExternalRecord], bool] | None,
    ) -> ExternalRecord:
        customer_id = self._id(external_id)
        if customer_id is None:
            raise PermanentError(f"{external_id!r} is not an OnSite customer id", status=404)
        self._release_leftovers()
        body = self._native_customer(native)
        client = self.client
        self._note_locks(customer_id)  # before the LOCK: its answer may never come
        try:
            client.lock(customer_id)
        except LockContentionError:
            self._note_locks()  # another session's lock, not ours
            raise
        except RetryableError:
            # The LOCK may have been taken with only its answer lost: give it back.
            self._release(customer_id)
            raise
        updated: Customer | None = None
        try:
            if unchanged is not None:
                current = client.get(customer_id)
                if current is None:
                    raise NotFoundError(f"OnSite customer {customer_id} is gone")
                record = self._record(current)
                if not unchanged(record):
                    raise ChangedError(f"OnSite customer {customer_id} changed since our last read", record)
            updated = client.put(customer_id, body)
        finally:
            # Always release: a lock left behind blocks the till until our session ends.
            failure = self._release(customer_id)
            if failure is not None and updated is not None:
                raise RetryableError(
                    f"customer {customer_id} was updated but UNLOCK failed: {failure}"
                ) from failure
        return self._record(updated)

    def _release(self, customer_id: int) -> Exception | None:
        """UNLOCK, reporting (not raising) a failure so it never hides the original error.

        A transient failure is tried again at once: while the lock stays, the cashier
        cannot save that customer at the till, and the next push to it may be minutes away.
        """
        failure: Exception | None = None
        for pause in (*UNLOCK_RETRY_PAUSES_S, None):
            try:
                self.client.unlock(customer_id)
            except RetryableError as err:
                failure = err
            except (AdapterError, httpx.HTTPError) as err:
                log.warning("UNLOCK of customer %s failed: %s", customer_id, err)
                return err
            else:
                self._unreleased.discard(customer_id)
                self._note_locks()
                return None
            if pause is not None:
                time.sleep(pause)
        log.warning("UNLOCK of customer %s failed, tried again at our next call: %s", customer_id, failure)
        self._unreleased.add(customer_id)
        return failure

    def _release_leftovers(self) -> None:
        for customer_id in sorted(self._unreleased):
            try:
                self.client.unlock(customer_id)
            except (RetryableError, httpx.TransportError):
                continue  # still failing: kept for the next call
            except (AdapterError, httpx.HTTPError) as err:
                # Refused for good (no longer ours, session gone): nothing left to give back.
                log.info("leftover lock of customer %s not released: %s", customer_id, err)
            self._unreleased.discard(customer_id)
        self._note_locks()

    def find_existing(self, values: Values, idempotency_key: str) -> ExternalRecord | None:
        expected = normalize(mapping.project(normalize(self._restrict(values)), self.code_field))
        queries: list[str] = []
        if expected.get(EMAIL):
            queries.append(f"{FILTER}email = {quote(expected[EMAIL])}")
        sent = self.from_canonical(expected)
        for phone in sent["phone_numbers"]:
            if phone["number"]:
                queries.append(f"{FILTER}phone = {quote(phone['number'])}")
        person = " ".join(p for p in (expected.get(GIVEN_NAME), expected.get(FAMILY_NAME)) if p)
        if person or expected.get(COMPANY_NAME):
            queries.append(f"{FILTER}name = {quote(person or expected[COMPANY_NAME])}")
        tried: set[int] = set()
        for query in queries:
            for customer_id in self.client.search_ids(query, limit=FIND_EXISTING_CANDIDATES):
                if customer_id in tried:
                    continue
                tried.add(customer_id)
                customer = self.client.get(customer_id)
                if customer is None:
                    continue
                if normalize(self.to_canonical(customer.native())) == expected:
                    return self._record(customer)
        return None

    def _restrict(self, values: Mapping[str, Any]) -> Values:
        return {field: values.get(field) for field in self.fields}

    # -- mapping -----------------------------------------------------------------------
    def to_canonical(self, native: Mapping[str, Any]) -> Values:
        return mapping.to_canonical(native, self.code_field)

    def from_canonical(self, values: Values) -> dict[str, Any]:
        return mapping.from_canonical(values, self.code_field)
