from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from bridge.adapters.base import Capability, WebhookRequest
from bridge.adapters.errors import (
    AuthError,
    LockContentionError,
    NotFoundError,
    PermanentError,
    RetryableError,
    classify,
)
from bridge.adapters.onsite import OnSiteAdapter
from bridge.adapters.onsite.mapping import BASE_FIELDS
from bridge.adapters.onsite.sandbox import OnSiteSandbox
from bridge.canonical import CUSTOMER_CODE, normalize
from bridge.demo.processes import ROOT, ServerThread
from bridge.sandbox.transport import SyncASGITransport

from .conftest import make_settings

JANE = {
    "given_name": "Jane",
    "family_name": "Smith",
    "company_name": None,
    "email": "jane@example.com",
    "homepage": "www.example.com",
    "phone_home": "+16135555555",
    "phone_work": None,
    "phone_mobile": "+16135550100",
    "phone_other": None,
    "billing_address": {"line1": "1 Main St", "city": "Ottawa", "region": "ON", "country": "CA"},
    "shipping_address": None,
    "birthday": "1990-04-01",
    "note": "prefers e-mail",
}


def values(**changes: object) -> dict[str, object]:
    return {**JANE, **changes}


def create(adapter: OnSiteAdapter, v: dict[str, object], key: str = "k") -> str:
    record = adapter.create(adapter.from_canonical(v), key)
    return record.external_id


def test_class_attributes() -> None:
    assert OnSiteAdapter.name == "onsite"
    assert OnSiteAdapter.fields == BASE_FIELDS
    assert Capability.WEBHOOKS not in OnSiteAdapter.capabilities
    assert OnSiteAdapter.sandbox_class == "bridge.adapters.onsite.sandbox:OnSiteSandbox"


def test_fields_include_customer_code_only_when_configured(
    make_adapter: Callable[..., OnSiteAdapter],
) -> None:
    assert CUSTOMER_CODE not in make_adapter().fields
    assert make_adapter(customer_code_field="import_id").fields == BASE_FIELDS | {CUSTOMER_CODE}


def test_create_then_fetch_round_trips_every_field(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    record = adapter.create(adapter.from_canonical(JANE), "key-1")
    assert record.external_id == "1"
    assert record.version is None
    assert record.updated_at is not None
    assert record.updated_at.tzinfo is not None
    assert abs(record.updated_at - datetime.now(UTC)) < timedelta(seconds=5)
    fetched = adapter.fetch(record.external_id)
    assert fetched is not None
    assert normalize(adapter.to_canonical(fetched.native)) == normalize(JANE)
    stored = sandbox.ground_truth()[0]
    assert stored["customer_id"] == "C-1"
    assert stored["phone_numbers"][0] == {
        "id": 1,
        "main": True,
        "type": "home",
        "list_order": 1,
        "number": "+16135555555",
    }


def test_company_only_customer_is_a_company_account(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    v = dict.fromkeys(JANE) | {"company_name": "Modeling Agency Ltd."}
    record = adapter.create(adapter.from_canonical(v), "key")
    assert sandbox.ground_truth()[0]["is_company"] is True
    assert normalize(adapter.to_canonical(record.native)) == normalize(v)


def test_fetch_missing_and_malformed_ids_return_none(adapter: OnSiteAdapter) -> None:
    assert adapter.fetch("999") is None
    assert adapter.fetch("C-15") is None


def test_customer_code_maps_to_import_id(
    make_adapter: Callable[..., OnSiteAdapter], sandbox: OnSiteSandbox
) -> None:
    adapter = make_adapter(customer_code_field="import_id")
    v = values(customer_code="LOYAL-7")
    record = adapter.create(adapter.from_canonical(v), "key")
    assert sandbox.ground_truth()[0]["import_id"] == "LOYAL-7"
    assert normalize(adapter.to_canonical(record.native)) == normalize(v)


def test_update_locks_puts_unlocks_and_clears_fields(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    rid = create(adapter, JANE)
    before = sandbox.ground_truth()[0]["modified"]
    time.sleep(0.002)
    changed = values(email="jane.smith@example.com", phone_mobile=None, note=None)
    record = adapter.update(rid, adapter.from_canonical(changed), None)
    assert normalize(adapter.to_canonical(record.native)) == normalize(changed)
    truth = sandbox.ground_truth()[0]
    assert truth["email"] == "jane.smith@example.com"
    assert truth["notes"] == ""
    assert truth["modified"] > before
    assert sandbox.lock_owners() == {}
    requests = sandbox.stats["requests"]
    assert requests["LOCK /api/customers/{id:int}/"] == 1
    assert requests["UNLOCK /api/customers/{id:int}/"] == 1


def test_failed_put_still_unlocks(adapter: OnSiteAdapter, raw: Callable[..., httpx.Client]) -> None:
    rid = create(adapter, JANE)
    bad = adapter.from_canonical(JANE) | {"birthday": "31/02/1990"}
    with pytest.raises(PermanentError) as caught:
        adapter.update(rid, bad, None)
    assert caught.value.status == 400
    assert "birthday" in str(caught.value)
    with raw() as client:
        assert client.get("/_sandbox/locks").json() == {"locks": {}}


def test_lost_lock_and_put_answers_leave_no_lock(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    rid = create(adapter, JANE)
    sandbox.set_faults({"lose_response_after_commit_rate": 1.0})
    with pytest.raises(RetryableError):
        adapter.update(rid, adapter.from_canonical(values(note="lost")), None)
    assert sandbox.lock_owners() == {}
    # Every answer is lost, so the adapter cannot know the first UNLOCK worked: it asks
    # again (a repeated UNLOCK is harmless) rather than risk leaving the till locked out.
    assert sandbox.stats["requests"]["UNLOCK /api/customers/{id:int}/"] >= 1
    sandbox.set_faults({"lose_response_after_commit_rate": 0.0})
    adapter.update(rid, adapter.from_canonical(values(note="again")), None)
    assert sandbox.ground_truth()[0]["notes"] == "again"
    assert sandbox.lock_owners() == {}


def test_update_of_missing_customer_is_not_found(adapter: OnSiteAdapter) -> None:
    with pytest.raises(NotFoundError):
        adapter.update("404", adapter.from_canonical(JANE), None)


def test_another_sessions_lock_is_lock_contention(
    adapter: OnSiteAdapter, sandbox: OnSiteSandbox, raw: Callable[..., httpx.Client]
) -> None:
    rid = create(adapter, JANE)
    with raw() as other:
        assert other.request("LOCK", f"/api/customers/{rid}/").status_code == 200
        with pytest.raises(LockContentionError) as caught:
            adapter.update(rid, adapter.from_canonical(values(note="x")), None)
        assert classify(caught.value).verdict == "retry"
        assert sandbox.ground_truth()[0]["notes"] == "prefers e-mail"
        assert list(sandbox.lock_owners()) == [int(rid)]
        assert other.request("UNLOCK", f"/api/customers/{rid}/").status_code == 200
    adapter.update(rid, adapter.from_canonical(values(note="x")), None)
    assert sandbox.ground_truth()[0]["notes"] == "x"
    assert sandbox.lock_owners() == {}


def test_adapter_reuses_one_session(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    for n in range(12):
        create(adapter, values(email=f"p{n}@example.com"))
        adapter.probe()
    assert sandbox.open_sessions() == 1
    adapter.close()
    assert sandbox.open_sessions() == 0
    assert sandbox.stats["requests"]["POST /api/sessions/current/logout/"] == 1


def test_seat_limit_refuses_a_client_without_cookie_reuse_but_never_the_adapter(
    transport: SyncASGITransport, raw: Callable[..., httpx.Client]
) -> None:
    sandbox = transport.app.state.sandbox
    sandbox.seat_limit = 3
    adapter = OnSiteAdapter(make_settings(), transport=transport)
    adapter.probe()  # one seat for the adapter
    statuses = []
    for _ in range(4):
        with raw() as one_shot:  # a new cookie jar per request: a new session each time
            statuses.append(one_shot.get("/api/customers/?count=1").status_code)
    assert statuses == [200, 200, 403, 403]
    for n in range(20):
        adapter.probe()
        create(adapter, values(email=f"s{n}@example.com"))
    adapter.close()
    with raw() as again:  # logging out gave the seat back
        assert again.get("/api/customers/?count=1").status_code == 200


def test_seat_exhaustion_is_retryable_not_auth(
    sandbox: OnSiteSandbox, make_adapter: Callable[..., OnSiteAdapter]
) -> None:
    sandbox.seat_limit = 0
    with pytest.raises(RetryableError) as caught:
        make_adapter().probe()
    assert caught.value.status == 403
    assert caught.value.retry_after


def test_expired_session_logs_in_again_once(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    rid = create(adapter, JANE)
    old = set(sandbox.sessions)
    assert sandbox.expire_sessions() == 1
    fetched = adapter.fetch(rid)
    assert fetched is not None
    assert sandbox.open_sessions() == 1
    assert set(sandbox.sessions).isdisjoint(old)
    # an update after expiry works too (the re-login happens on LOCK)
    sandbox.expire_sessions()
    adapter.update(rid, adapter.from_canonical(values(note="after expiry")), None)
    assert sandbox.ground_truth()[0]["notes"] == "after expiry"
    assert sandbox.lock_owners() == {}


def test_idle_timeout_frees_seats(make_adapter: Callable[..., OnSiteAdapter], sandbox: OnSiteSandbox) -> None:
    sandbox.session_idle_timeout_s = 0.05
    sandbox.seat_limit = 1
    first = make_adapter()
    first.probe()
    time.sleep(0.1)
    second = make_adapter()
    second.probe()  # the first session idled out, so its seat is free
    assert sandbox.open_sessions() == 1


def test_wrong_password_is_auth_error(make_adapter: Callable[..., OnSiteAdapter]) -> None:
    with pytest.raises(AuthError) as caught:
        make_adapter(password="nope").probe()
    assert caught.value.status == 401
    assert "admin" not in str(caught.value)


def test_wrong_private_app_id_is_auth_error(make_adapter: Callable[..., OnSiteAdapter]) -> None:
    with pytest.raises(AuthError) as caught:
        make_adapter(private_app_id="00000000-0000-0000-0000-000000000000").probe()
    assert caught.value.status == 403


def test_server_errors_are_retryable(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    sandbox.set_faults({"down": True})
    with pytest.raises(RetryableError) as caught:
        adapter.probe()
    assert caught.value.status == 503


def test_poll_pages_through_changes_since(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    adapter.client.page_size = 3
    for n in range(5):
        create(adapter, values(email=f"old{n}@example.com"))
    time.sleep(0.01)
    since = datetime.now(UTC)
    time.sleep(0.01)
    new_ids = [create(adapter, values(email=f"new{n}@example.com")) for n in range(7)]
    polled = list(adapter.poll(since))
    # Paged in OnSite's order of the ID column (a string: C-10 sorts before C-6).
    assert sorted((r.external_id for r in polled), key=int) == new_ids
    assert all(r.updated_at is not None and r.updated_at >= since for r in polled)
    assert {r.native["email"] for r in polled} == {f"new{n}@example.com" for n in range(7)}
    assert len(list(adapter.poll(None))) == 12
    assert sandbox.stats["requests"]["POST /api/customers/search/"] >= 3 + 4


def test_a_poll_pass_reads_through_transient_failures(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    # One failed GET among a pass's dozen used to fail the whole pass: at 30 % transient
    # failures a pass of 13 requests then got through about once in a hundred tries.
    adapter.client.page_size = 5
    ids = [create(adapter, values(email=f"p{n}@example.com")) for n in range(12)]
    sandbox.set_faults({"error_rate": 0.2, "rate_limit_rate": 0.1, "seed": 11})
    passes = [sorted((r.external_id for r in adapter.poll(None)), key=int) for _ in range(5)]
    assert passes == [ids] * 5
    failed = sandbox.stats["faults"]["429"] + sandbox.stats["faults"]["500"]
    assert failed >= 10  # the faults were there, and read through


def test_poll_sees_till_edits(
    adapter: OnSiteAdapter, sandbox: OnSiteSandbox, transport: SyncASGITransport
) -> None:
    rid = create(adapter, JANE)
    since = datetime.now(UTC)
    time.sleep(0.002)
    transport.run(sandbox.till_edit({"id": rid, "fields": {"email": "till@example.com"}}))
    polled = list(adapter.poll(since))
    assert [r.external_id for r in polled] == [rid]
    assert adapter.to_canonical(polled[0].native)["email"] == "till@example.com"


def test_poll_converts_server_local_time(
    transport: SyncASGITransport, make_adapter: Callable[..., OnSiteAdapter]
) -> None:
    sandbox = transport.app.state.sandbox
    sandbox.zone = ZoneInfo("America/Toronto")
    adapter = make_adapter(server_timezone="America/Toronto")
    since = datetime.now(UTC) - timedelta(seconds=1)
    rid = create(adapter, JANE)
    polled = list(adapter.poll(since))
    assert [r.external_id for r in polled] == [rid]
    assert polled[0].updated_at is not None
    assert abs(polled[0].updated_at - datetime.now(UTC)) < timedelta(seconds=5)


def test_find_existing_by_email_phone_and_name(adapter: OnSiteAdapter) -> None:
    assert adapter.find_existing(JANE, "k") is None
    rid = create(adapter, JANE)
    create(adapter, values(note="a different Jane"))  # same e-mail, other data: not ours
    found = adapter.find_existing(JANE, "k")
    assert found is not None
    assert found.external_id == rid

    by_phone = values(email=None, note="phone only")
    pid = create(adapter, by_phone)
    found = adapter.find_existing(by_phone, "k")
    assert found is not None
    assert found.external_id == pid

    by_name = dict.fromkeys(JANE) | {"given_name": "Ada", "family_name": "Lovelace"}
    nid = create(adapter, by_name)
    found = adapter.find_existing(by_name, "k")
    assert found is not None
    assert found.external_id == nid
    assert adapter.find_existing(by_name | {"note": "someone else"}, "k") is None


def test_lost_create_responses_never_duplicate(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    sandbox.set_faults({"lose_response_after_commit_rate": 0.3, "seed": 11})
    lost = 0
    for n in range(200):
        v = values(email=f"crash{n}@example.com", given_name=f"Jane{n}")
        native = adapter.from_canonical(v)
        while True:  # the engine's retry: after a transport error, look before creating again
            try:
                adapter.create(native, f"key-{n}")
                break
            except RetryableError:
                lost += 1
            found = None
            for _ in range(20):  # the search is a POST: its answer can be lost too
                try:
                    found = adapter.find_existing(v, f"key-{n}")
                    break
                except RetryableError:
                    lost += 1
            else:
                pytest.fail("find_existing never got an answer")
            if found is not None:
                break
    assert lost > 30
    truth = sandbox.ground_truth()
    assert len(truth) == 200
    assert len({r["email"] for r in truth}) == 200


def test_close_without_session_does_not_log_in(adapter: OnSiteAdapter, sandbox: OnSiteSandbox) -> None:
    adapter.close()
    assert sum(sandbox.stats["requests"].values()) == 0


def test_no_webhooks_every_request_is_unknown(adapter: OnSiteAdapter) -> None:
    batch = adapter.parse_webhook(WebhookRequest(url="/hooks/onsite", headers={}, body=b"<x/>"))
    assert batch.events == []
    assert batch.unknown == ["onsite.unsolicited"]
    assert OnSiteAdapter.handled_events == frozenset()


CHILD = """
import sys, time
from pathlib import Path
from bridge.adapters.onsite import OnSiteAdapter
from bridge.adapters.onsite.tests.conftest import make_settings
adapter = OnSiteAdapter(make_settings(base_url=sys.argv[1]))
adapter.state_dir = Path(sys.argv[2])
adapter.probe()
print("session open", flush=True)
time.sleep(600)
"""


def kill_9_once_it_says(line: bytes, script: str, *args: str) -> None:
    """Run `script` in a child process and kill -9 it as soon as it prints `line`."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == line
    child.kill()
    child.wait(timeout=10)


def test_a_killed_process_leaves_its_session_to_its_successor(tmp_path: Path) -> None:
    """kill -9 cannot log out; the next process in the same state slot carries the
    session on instead of taking a second seat."""
    sandbox = OnSiteSandbox(seed=7)
    sandbox.seat_limit = 1
    server = ServerThread(sandbox.app).start()
    state = tmp_path / "state"
    try:
        kill_9_once_it_says(b"session open", CHILD, server.url, str(state))
        assert sandbox.open_sessions() == 1  # the dead process's seat is still taken
        successor = OnSiteAdapter(make_settings(base_url=server.url))
        successor.state_dir = state
        successor.probe()  # with the one seat taken, only the inherited session can answer
        assert sandbox.open_sessions() == 1
        successor.close()  # logs out: the seat is free and the slot forgets the session
        assert sandbox.open_sessions() == 0
        assert not list(state.glob("slot-*/session"))
    finally:
        server.stop()


CHILD_KILLED_MID_UPDATE = """
import sys, time
from pathlib import Path
import httpx
from bridge.adapters.onsite import OnSiteAdapter
from bridge.adapters.onsite.tests.conftest import make_settings

class StallAtPut(httpx.HTTPTransport):
    def handle_request(self, request):
        if request.method == "PUT":
            print("locked", flush=True)
            time.sleep(600)
        return super().handle_request(request)

adapter = OnSiteAdapter(make_settings(base_url=sys.argv[1]), transport=StallAtPut())
adapter.state_dir = Path(sys.argv[2])
adapter.update(sys.argv[3], adapter.from_canonical({"note": "never"}), None)
"""


def test_a_lock_held_by_a_killed_process_is_given_back_by_its_successor(tmp_path: Path) -> None:
    """kill -9 between LOCK and UNLOCK: the session lives on in the slot, and so does its
    lock. The process carrying the session on gives it back at once, or the till could not
    save that customer for as long as the session lives (the full kill_worker chaos run)."""
    sandbox = OnSiteSandbox(seed=7)
    server = ServerThread(sandbox.app).start()
    state = tmp_path / "state"
    try:
        first = OnSiteAdapter(make_settings(base_url=server.url))
        rid = create(first, JANE)
        first.close()
        kill_9_once_it_says(b"locked", CHILD_KILLED_MID_UPDATE, server.url, str(state), rid)
        assert list(sandbox.lock_owners()) == [int(rid)]  # the till is locked out
        successor = OnSiteAdapter(make_settings(base_url=server.url))
        successor.state_dir = state
        successor.probe()  # its first call: the inherited session gives the lock back
        assert sandbox.lock_owners() == {}
        assert not list(state.glob("slot-*/locks"))
        successor.close()
    finally:
        server.stop()


def test_live_processes_never_share_a_slot(
    make_adapter: Callable[..., OnSiteAdapter], sandbox: OnSiteSandbox, tmp_path: Path
) -> None:
    first, second = make_adapter(), make_adapter()
    first.state_dir = second.state_dir = tmp_path
    first.probe()
    second.probe()
    assert sandbox.open_sessions() == 2
    assert len(list(tmp_path.glob("slot-*/session"))) == 2


class _FailFirstUnlock(httpx.BaseTransport):
    """The outside world failing: the first `times` UNLOCKs meet a 503 before reaching OnSite."""

    def __init__(self, inner: httpx.BaseTransport, times: int = 1) -> None:
        self.inner = inner
        self.times = times
        self.failed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "UNLOCK" and self.failed < self.times:
            self.failed += 1
            return httpx.Response(503, text="proxy: upstream unavailable")
        return self.inner.handle_request(request)


def test_a_transient_unlock_failure_is_retried_at_once(
    transport: SyncASGITransport, sandbox: OnSiteSandbox
) -> None:
    flaky = _FailFirstUnlock(transport)
    adapter = OnSiteAdapter(make_settings(), transport=flaky)
    try:
        rid = create(adapter, JANE)
        adapter.update(rid, adapter.from_canonical(values(note="kept")), None)
        assert flaky.failed == 1
        assert sandbox.lock_owners() == {}  # the till is not locked out until the next push
        assert sandbox.ground_truth()[0]["notes"] == "kept"
    finally:
        adapter.close()


def test_a_lock_whose_unlock_keeps_failing_is_given_back_at_the_next_call(
    transport: SyncASGITransport, sandbox: OnSiteSandbox
) -> None:
    from bridge.adapters.onsite.adapter import UNLOCK_RETRY_PAUSES_S

    attempts = len(UNLOCK_RETRY_PAUSES_S) + 1
    flaky = _FailFirstUnlock(transport, times=attempts)
    adapter = OnSiteAdapter(make_settings(), transport=flaky)
    try:
        rid = create(adapter, JANE)
        with pytest.raises(RetryableError):  # updated, but the lock could not be given back
            adapter.update(rid, adapter.from_canonical(values(note="kept")), None)
        assert flaky.failed == attempts
        assert sandbox.lock_owners() != {}  # the till is locked out for now...
        list(adapter.poll(None))  # ...until this process's next call to OnSite
        assert sandbox.lock_owners() == {}
        assert sandbox.ground_truth()[0]["notes"] == "kept"
    finally:
        adapter.close()
