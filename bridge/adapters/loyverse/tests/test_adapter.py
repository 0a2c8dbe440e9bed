"""The adapter against the sandbox over real HTTP (SyncASGITransport)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.base import Capability, ExternalRecord
from bridge.adapters.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from bridge.adapters.loyverse import LoyverseAdapter
from bridge.adapters.loyverse.client import format_ts
from bridge.canonical import normalize

from .conftest import Env


def _values(**values: Any) -> dict[str, Any]:
    return normalize({field: values.get(field) for field in LoyverseAdapter.fields})


def _create(adapter: LoyverseAdapter, **values: Any) -> ExternalRecord:
    return adapter.create(adapter.from_canonical(_values(**values)), "key")


def test_declaration() -> None:
    assert LoyverseAdapter.name == "loyverse"
    assert LoyverseAdapter.sandbox_class == "bridge.adapters.loyverse.sandbox:LoyverseSandbox"
    assert Capability.BULK not in LoyverseAdapter.capabilities
    assert {Capability.WEBHOOKS, Capability.POLLING, Capability.CREATE} <= LoyverseAdapter.capabilities


def test_create_then_fetch(env: Env) -> None:
    adapter = env.adapter()
    values = _values(
        full_name="Mary Anne van der Berg",
        email="Mary@Example.com",
        phone_mobile="+31205550142",
        billing_address={"line1": "Prinsengracht 263", "city": "Amsterdam", "country": "NL"},
        note="oat milk",
        customer_code="VDB-1",
    )
    created = adapter.create(adapter.from_canonical(values), "k")
    assert created.version is None
    assert not created.deleted
    assert created.updated_at is not None
    assert created.updated_at.tzinfo is not None
    fetched = adapter.fetch(created.external_id)
    assert fetched is not None
    assert fetched.native == created.native
    canonical = normalize(adapter.to_canonical(fetched.native))
    assert canonical == {**values, "given_name": "Mary Anne", "family_name": "van der Berg"}


def test_fetch_of_an_unknown_id_is_none(env: Env) -> None:
    assert env.adapter().fetch("00000000-0000-4000-8000-000000000000") is None


def test_update_sends_the_full_record_so_nothing_is_cleared(env: Env) -> None:
    adapter = env.adapter()
    values = _values(full_name="Ada Lovelace", email="ada@example.com", phone_mobile="+14155550100")
    created = adapter.create(adapter.from_canonical(values), "k")
    changed = {**values, "note": "new note"}
    updated = adapter.update(created.external_id, adapter.from_canonical(changed), None)
    assert normalize(adapter.to_canonical(updated.native))["email"] == "ada@example.com"
    assert updated.native["phone_number"] == "+14155550100"
    assert updated.native["note"] == "new note"
    assert updated.updated_at > created.updated_at  # type: ignore[operator]


def test_update_of_a_customer_loyverse_does_not_know_is_not_found(env: Env) -> None:
    adapter = env.adapter()
    with pytest.raises(NotFoundError):
        adapter.update(
            "00000000-0000-4000-8000-000000000000", adapter.from_canonical(_values(full_name="X")), None
        )


def test_delete_is_soft_and_idempotent(env: Env) -> None:
    adapter = env.adapter()
    created = _create(adapter, full_name="Gone Soon")
    adapter.delete(created.external_id, None)
    fetched = adapter.fetch(created.external_id)
    assert fetched is not None
    assert fetched.deleted
    adapter.delete(created.external_id, None)  # already deleted: nothing to do, no error


def test_a_create_without_a_name_is_permanent_with_the_vendor_reason(env: Env) -> None:
    with pytest.raises(PermanentError, match="MISSING_REQUIRED_PARAMETER"):
        env.adapter().create({"email": "a@example.com"}, "k")


def test_poll_pages_everything_and_filters_by_updated_at(env: Env) -> None:
    for i in range(300):
        env.till({"name": f"Seed {i}"})
    adapter = env.adapter()
    everything = list(adapter.poll(None))
    assert len(everything) == 300
    assert len({r.external_id for r in everything}) == 300
    assert env.stats()["requests"]["GET /v1.0/customers"] == 2  # two pages of up to 250
    time.sleep(0.01)
    since = datetime.now(UTC)
    edited = env.till({"note": "changed"}, customer_id=everything[5].external_id)
    new = env.till({"name": "Newcomer"})
    changed = list(adapter.poll(since))
    assert [r.external_id for r in changed] == [edited["id"], new["id"]]
    assert all(
        r.updated_at is not None and r.updated_at >= since - timedelta(milliseconds=1) for r in changed
    )


def test_poll_is_inclusive_at_the_watermark(env: Env) -> None:
    created = _create(env.adapter(), full_name="Edge Case")
    assert created.updated_at is not None
    assert [r.external_id for r in env.adapter().poll(created.updated_at)] == [created.external_id]


def test_poll_streams_page_by_page(env: Env) -> None:
    for i in range(260):
        env.till({"name": f"Seed {i}"})
    first = next(env.adapter().poll(None))
    assert first.native["name"] == "Seed 0"
    assert env.stats()["requests"]["GET /v1.0/customers"] == 1


def test_poll_reports_deletes(env: Env) -> None:
    adapter = env.adapter()
    kept, gone = _create(adapter, full_name="Kept"), _create(adapter, full_name="Gone")
    adapter.delete(gone.external_id, None)
    flags = {r.external_id: r.deleted for r in adapter.poll(None)}
    assert flags == {kept.external_id: False, gone.external_id: True}


def test_probe(make_env: Callable[..., Env]) -> None:
    env = make_env(tokens=["good-token"])
    env.adapter(access_token="good-token").probe()
    assert env.stats()["requests"]["GET /v1.0/customers"] == 1
    with pytest.raises(AuthError):
        env.adapter(access_token="bad-token").probe()


def test_a_429_is_retryable_without_retry_after(make_env: Callable[..., Env]) -> None:
    env = make_env(rate_limit_requests=1, rate_limit_window_s=60)
    adapter = env.adapter()
    adapter.probe()
    with pytest.raises(RateLimitedError) as caught:
        adapter.probe()
    assert caught.value.status == 429
    assert caught.value.retry_after is None


def test_server_errors_and_lost_connections_are_retryable(env: Env) -> None:
    adapter = env.adapter()
    env.control.post("/faults", json={"down": True})
    with pytest.raises(RetryableError) as caught:
        adapter.probe()
    assert caught.value.status == 503
    env.control.post("/faults", json={"down": False, "lose_response_after_commit_rate": 1.0})
    with pytest.raises(RetryableError) as lost:
        _create(adapter, full_name="Committed Anyway")
    assert lost.value.status is None
    assert env.control.get("/customers").json()["count"] == 1


def test_find_existing_by_email(env: Env) -> None:
    adapter = env.adapter()
    made = _create(adapter, full_name="Mail Match", email="match@example.com")
    _create(adapter, full_name="Other", email="other@example.com")
    found = adapter.find_existing(_values(full_name="Mail Match", email="match@example.com"), "k")
    assert found is not None
    assert found.external_id == made.external_id


def test_find_existing_by_customer_code_and_phone(env: Env) -> None:
    adapter = env.adapter()
    by_code = _create(adapter, full_name="Code Match", customer_code="LOY-77")
    # Typed at the till in a local format; the bridge holds E.164.
    by_phone = env.till({"name": "Phone Match", "phone_number": "(415) 555-0123"})
    found = adapter.find_existing(_values(customer_code="loy-77"), "k")
    assert found is not None
    assert found.external_id == by_code.external_id
    found = adapter.find_existing(_values(phone_mobile="+14155550123"), "k")
    assert found is not None
    assert found.external_id == by_phone["id"]


def test_find_existing_returns_none_when_nothing_matches(env: Env) -> None:
    adapter = env.adapter()
    gone = _create(adapter, full_name="Deleted", email="gone@example.com", customer_code="DEL-1")
    adapter.delete(gone.external_id, None)
    assert adapter.find_existing(_values(email="gone@example.com", customer_code="DEL-1"), "k") is None
    assert adapter.find_existing(_values(full_name="Nobody"), "k") is None


def test_find_existing_scans_only_recent_customers_for_codes(env: Env) -> None:
    adapter = env.adapter()
    old = _create(adapter, full_name="Old", customer_code="OLD-1")
    record = env.sandbox.store.get(old.external_id)
    assert record is not None
    record["created_at"] = format_ts(datetime.now(UTC) - timedelta(hours=2))
    env.sandbox.store.put(old.external_id, record)
    assert adapter.find_existing(_values(customer_code="OLD-1"), "k") is None
    wide = env.adapter(find_existing_lookback_s=3 * 3600)
    assert wide.find_existing(_values(customer_code="OLD-1"), "k") is not None


def _engine_create(adapter: LoyverseAdapter, values: dict[str, Any], key: str) -> ExternalRecord:
    """What the engine does: on a failed create, look before creating again."""
    native = adapter.from_canonical(values)
    for _ in range(30):
        try:
            return adapter.create(native, key)
        except RetryableError:
            found = adapter.find_existing(values, key)
            if found is not None:
                return found
    raise AssertionError("create never settled")


def test_creates_with_lost_responses_make_each_customer_exactly_once(env: Env) -> None:
    env.control.post(
        "/faults", json={"lose_response_after_commit_rate": 0.3, "seed": 11, "rate_limit_requests": None}
    )
    adapter = env.adapter()
    wanted: list[dict[str, Any]] = []
    for i in range(200):
        if i % 3 == 0:
            wanted.append(_values(full_name=f"Person {i}", email=f"p{i}@example.com"))
        elif i % 3 == 1:
            wanted.append(_values(full_name=f"Person {i}", phone_mobile=f"+1415555{i:04d}"))
        else:
            wanted.append(_values(full_name=f"Person {i}", customer_code=f"C-{i:05d}"))
    ids = [_engine_create(adapter, values, f"key-{i}").external_id for i, values in enumerate(wanted)]
    assert env.stats()["faults"]["lost_after_commit"] > 30
    truth = env.control.get("/customers").json()["customers"]
    assert len(truth) == 200
    assert sorted(ids) == sorted(c["id"] for c in truth)
    assert sorted(c["name"] for c in truth) == sorted(f"Person {i}" for i in range(200))


@pytest.mark.slow
def test_a_shared_limiter_keeps_workers_under_the_budget(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    # A 2 s window: its 5 % margin (100 ms) covers the scheduling jitter of a loaded machine.
    limit, window, workers, per_worker = 100, 1.0, 4, 250
    env = make_env(rate_limit_requests=limit, rate_limit_window_s=window)
    settings = {
        "rate_limit_requests": limit,
        "rate_limit_window_s": window,
        "rate_limit_url": f"sqlite:///{tmp_path / 'rate.sqlite'}",
    }
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        adapter = env.adapter(**settings)  # each worker builds its own, as Celery workers do
        try:
            ids: dict[int, str] = {}
            for op in range(per_worker):
                customer = op % 50
                values = _values(full_name=f"W{n} C{customer}", note=f"round {op // 50}")
                native = adapter.from_canonical(values)
                if customer in ids:
                    adapter.update(ids[customer], native, None)
                else:
                    ids[customer] = adapter.create(native, f"{n}-{customer}").external_id
        except BaseException as err:
            errors.append(err)
        finally:
            adapter.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert errors == []
    stats = env.stats()
    assert "429" not in stats["faults"]
    assert stats["requests"]["POST /v1.0/customers"] == workers * per_worker
    total = workers * per_worker
    # The first `limit` go at once, then one window per further `limit`: the budget's
    # own minimum is (total - limit) / rate; we must be paced, and not much slower.
    assert elapsed >= (total - limit) / (limit / window)
    assert elapsed <= 1.5 * total / (limit / window)
