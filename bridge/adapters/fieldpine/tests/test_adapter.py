"""FieldpineAdapter against the sandbox over real HTTP."""

from __future__ import annotations

import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bridge.adapters.base import Capability
from bridge.adapters.errors import AuthError, PermanentError, RateLimitedError, RetryableError
from bridge.adapters.fieldpine import FieldpineAdapter
from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.adapters.registry import load_class
from bridge.canonical import normalize
from bridge.sandbox.transport import SyncASGITransport

from .conftest import make_adapter


def key(n: int | str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"posbridge:customer:{n}:fieldpine"))


VALUES = {
    "given_name": "Aroha",
    "family_name": "Ngata",
    "full_name": None,
    "company_name": "Kauri Hardware",
    "email": "aroha@example.com",
    "phone_mobile": "+64211234567",
    "phone_home": "+6495550142",
    "billing_address": {"line1": "12 Beach Road", "line2": "Level 2"},
}


def test_class_attributes_and_sandbox_class() -> None:
    assert FieldpineAdapter.name == "fieldpine"
    assert FieldpineAdapter.capabilities >= {Capability.WEBHOOKS, Capability.POLLING, Capability.CREATE}
    assert Capability.DELETE not in FieldpineAdapter.capabilities  # Fieldpine documents no delete
    assert FieldpineAdapter.sandbox_class is not None
    module, _, cls = FieldpineAdapter.sandbox_class.partition(":")
    assert cls == "FieldpineSandbox"
    assert load_class("bridge.adapters.fieldpine:FieldpineAdapter") is FieldpineAdapter
    assert module == FieldpineSandbox.__module__


def test_preassigned_id_is_the_key_upper_cased(adapter: FieldpineAdapter) -> None:
    k = key(1)
    assert adapter.preassigned_id(k) == k.upper()
    assert adapter.preassigned_id(k.upper()) == k.upper()
    # Not a UUID: still deterministic, still a valid UUID.
    assert adapter.preassigned_id("abc") == adapter.preassigned_id("abc")
    assert uuid.UUID(adapter.preassigned_id("abc"))


def test_create_uses_the_preassigned_id_and_fetch_returns_it(adapter: FieldpineAdapter) -> None:
    k = key(2)
    created = adapter.create(adapter.from_canonical(VALUES), k)
    assert created.external_id == adapter.preassigned_id(k)
    assert created.version is None
    assert created.updated_at is not None
    assert abs(datetime.now(UTC) - created.updated_at) < timedelta(minutes=1)
    fetched = adapter.fetch(created.external_id)
    assert fetched is not None
    assert fetched.external_id == created.external_id == fetched.native["CustomerId"]
    assert fetched.native == created.native
    assert normalize(adapter.to_canonical(fetched.native)) == normalize(VALUES)
    assert adapter.fetch(created.external_id.lower()) == fetched


def test_fetch_of_absent_or_malformed_id_is_none(adapter: FieldpineAdapter) -> None:
    assert adapter.fetch(str(uuid.uuid4())) is None
    assert adapter.fetch("C-15") is None


def test_create_resent_is_the_same_customer(adapter: FieldpineAdapter, http: httpx.Client) -> None:
    native = adapter.from_canonical(VALUES)
    first = adapter.create(native, key(3))
    again = adapter.create(native, key(3))
    assert again == first
    assert http.get("/_sandbox/stats").json()["writes"] == 1
    assert http.get("/_sandbox/customers").json()["count"] == 1


def test_find_existing_fetches_the_preassigned_id(adapter: FieldpineAdapter) -> None:
    assert adapter.find_existing(VALUES, key(4)) is None
    created = adapter.create(adapter.from_canonical(VALUES), key(4))
    assert adapter.find_existing(VALUES, key(4)) == created


def test_update_sends_the_full_record(adapter: FieldpineAdapter, http: httpx.Client) -> None:
    created = adapter.create(adapter.from_canonical(VALUES), key(5))
    # A till edit to a field we do not map survives our update.
    http.post("/_sandbox/edit", json={"id": created.external_id, "fields": {"EUCitizen": True}})
    changed = {**VALUES, "email": None, "phone_home": None, "billing_address": {"line1": "1 Queen Street"}}
    updated = adapter.update(created.external_id, adapter.from_canonical(changed), None)
    assert updated.external_id == created.external_id
    assert normalize(adapter.to_canonical(updated.native)) == normalize(changed)
    assert updated.native["EUCitizen"] is True
    assert updated.updated_at is not None
    assert created.updated_at is not None
    assert updated.updated_at > created.updated_at
    with pytest.raises(PermanentError):
        adapter.update("not-a-uuid", adapter.from_canonical(changed), None)


def test_200_creates_with_lost_responses_make_exactly_200_customers(
    adapter: FieldpineAdapter, http: httpx.Client
) -> None:
    http.post("/_sandbox/faults", json={"lose_response_after_commit_rate": 0.3, "seed": 11})
    retries = 0
    ids = set()
    for n in range(200):
        native = adapter.from_canonical({**VALUES, "email": f"c{n}@example.com", "given_name": f"C{n}"})
        while True:
            try:
                record = adapter.create(native, key(f"bulk-{n}"))
                break
            except RetryableError:
                retries += 1
        ids.add(record.external_id)
    assert retries > 20  # the fault really fired
    truth = http.get("/_sandbox/customers").json()
    assert truth["count"] == 200
    assert {c["CustomerId"] for c in truth["customers"]} == ids
    assert http.get("/_sandbox/stats").json()["writes"] == 200


def test_backfill_streams_20000_rows_each_seen_once(adapter: FieldpineAdapter, http: httpx.Client) -> None:
    http.post("/_sandbox/seed", json={"count": 20_000})
    tracemalloc.start()
    seen: dict[str, int] = {}
    try:
        for record in adapter.poll(None):
            seen[record.external_id] = seen.get(record.external_id, 0) + 1
            assert record.updated_at is not None
            assert record.updated_at.tzinfo is not None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(seen) == 20_000
    assert set(seen.values()) == {1}
    truth = {c["CustomerId"] for c in http.get("/_sandbox/customers").json()["customers"]}
    assert set(seen) == truth
    requests = http.get("/_sandbox/stats").json()["requests"]
    assert requests["GET /OpenApi2/Customers"] == 20_000 // 500 + 1  # last page is the empty one
    # The test transport buffers one page (500 rows) and the sandbox, which runs in this
    # process, renders it; `seen` holds 20,000 ids. Holding all 20,000 rows as dicts would
    # add about 30 MB on top, so 20 MB separates streaming from buffering with room for a
    # loaded machine.
    assert peak < 20_000_000


def test_poll_since_yields_changes_at_or_after(adapter: FieldpineAdapter, sandbox: FieldpineSandbox) -> None:
    http_seed = 300
    sandbox.seed_customers(http_seed)  # all edited at least a minute ago
    since = datetime.now(UTC)
    a = adapter.create(adapter.from_canonical(VALUES), key("since-a"))
    b = adapter.create(adapter.from_canonical({**VALUES, "email": "b@example.com"}), key("since-b"))
    got = [r.external_id for r in adapter.poll(since)]
    assert got == [b.external_id, a.external_id]  # Fieldpine order: newest edit first
    assert [r.external_id for r in adapter.poll(datetime.now(UTC) + timedelta(hours=1))] == []
    assert len(list(adapter.poll(since - timedelta(days=4 * 365)))) == http_seed + 2


def test_poll_pages_by_page_size(transport: SyncASGITransport, sandbox: FieldpineSandbox) -> None:
    sandbox.seed_customers(25)
    small = make_adapter(transport, page_size=10)
    assert len({r.external_id for r in small.poll(None)}) == 25
    assert sandbox.stats["requests"]["GET /OpenApi2/Customers"] == 3


def test_hosted_rm_system_path(transport: SyncASGITransport, sandbox: FieldpineSandbox) -> None:
    hosted = make_adapter(transport, rm_system="RM42")
    created = hosted.create(hosted.from_canonical(VALUES), key("hosted"))
    assert hosted.fetch(created.external_id) == created
    assert sandbox.stats["requests"]["POST /OpenApi2/Customers"] == 1


def test_probe_and_auth_errors(transport: SyncASGITransport) -> None:
    sb = FieldpineSandbox(tokens=["good"])
    t = SyncASGITransport(sb.app)
    try:
        make_adapter(t, api_key="good").probe()
        bad = make_adapter(t, api_key="bad")
        with pytest.raises(AuthError) as err:
            bad.probe()
        assert err.value.status == 401
        with pytest.raises(AuthError):
            bad.create({"Name": "x"}, key("auth"))
    finally:
        t.shutdown()


def test_rate_limit_is_retryable_with_retry_after(adapter: FieldpineAdapter, http: httpx.Client) -> None:
    http.post("/_sandbox/faults", json={"rate_limit_requests": 1, "rate_limit_window_s": 7})
    adapter.probe()
    with pytest.raises(RateLimitedError) as err:
        adapter.fetch(str(uuid.uuid4()))
    assert err.value.retry_after == 7
    assert "3001" in str(err.value)


def test_server_errors_and_outage_are_retryable(adapter: FieldpineAdapter, http: httpx.Client) -> None:
    http.post("/_sandbox/faults", json={"down": True})
    with pytest.raises(RetryableError) as err:
        adapter.probe()
    assert err.value.status == 503
    http.post("/_sandbox/faults", json={"down": False, "error_rate": 1.0})
    with pytest.raises(RetryableError):
        adapter.create({"Name": "x"}, key("err"))
    assert http.get("/_sandbox/customers").json()["count"] == 0


def test_validation_errors_are_permanent_with_vendor_reason(adapter: FieldpineAdapter) -> None:
    with pytest.raises(PermanentError) as err:
        adapter.create({"Name": 12}, key("invalid"))
    assert err.value.status == 400
    assert "2003" in str(err.value)
    assert "Name" in str(err.value)


def test_timeouts_are_retryable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    adapter = make_adapter(httpx.MockTransport(slow))
    with pytest.raises(RetryableError):
        adapter.probe()
    with pytest.raises(RetryableError):
        adapter.create({"Name": "x"}, key("timeout"))
