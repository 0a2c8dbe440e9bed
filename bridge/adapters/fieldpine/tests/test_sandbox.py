"""The Fieldpine simulator over real HTTP: paths, auth, POST semantics, search, paging, hooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.sandbox.transport import SyncASGITransport

from .conftest import API_KEY, HOOK_SECRET, Receiver

PAT = {
    "Name": "Pat Benatar",
    "Address1": "123 Riverlands Road",
    "Address2": "Perth",
    "Mobile": "+61 12 1234 5678",
    "Email": "",
    "EUCitizen": True,
}


def rows(response: httpx.Response) -> list[dict[str, object]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["RecordCount"] == len(body["Data"])
    return list(body["Data"])


def writes(http: httpx.Client) -> int:
    return int(http.get("/_sandbox/stats").json()["writes"])


def test_seed_example_body_is_stored_with_an_allocated_uuid(http: httpx.Client) -> None:
    stored = rows(http.post("/OpenApi2/Customers", json=PAT))[0]
    assert str(uuid.UUID(str(stored["CustomerId"]))).upper() == stored["CustomerId"]
    assert {k: stored[k] for k in PAT} == PAT
    truth = http.get("/_sandbox/customers").json()
    assert truth["count"] == 1
    assert truth["customers"][0]["CustomerId"] == stored["CustomerId"]


def test_empty_body_still_creates_a_customer(http: httpx.Client) -> None:
    stored = rows(http.post("/OpenApi2/Customers", json={}))[0]
    assert stored["Name"] == ""
    assert http.get("/_sandbox/customers").json()["count"] == 1


def test_listing_lags_when_consistency_lag_is_configured(http: httpx.Client) -> None:
    rows(http.post("/OpenApi2/Customers", json={"Name": "Before"}))
    http.post("/_sandbox/faults", json={"consistency_lag_ms": 60_000})
    cid = rows(http.post("/OpenApi2/Customers", json={"Name": "After"}))[0]["CustomerId"]
    listed = [r["Name"] for r in rows(http.get("/OpenApi2/Customers", params={"limit": 0}))]
    assert listed == ["Before"]
    assert rows(http.get("/OpenApi2/Customers", params={"englishquery": f"customerid {cid}"})) == []
    assert http.get("/_sandbox/customers").json()["count"] == 2


def test_same_body_without_id_is_processed_once(http: httpx.Client) -> None:
    first = rows(http.post("/OpenApi2/Customers", json=PAT))[0]
    again = rows(http.post("/OpenApi2/Customers", json=PAT))[0]
    assert again["CustomerId"] == first["CustomerId"]
    assert writes(http) == 1
    changed = rows(http.post("/OpenApi2/Customers", json={**PAT, "Email": "pat@example.com"}))[0]
    assert changed["CustomerId"] != first["CustomerId"]  # documented: may become a new customer
    assert http.get("/_sandbox/customers").json()["count"] == 2


def test_same_body_with_id_is_processed_once(http: httpx.Client) -> None:
    body = {**PAT, "CustomerId": "16D33318-1AB4-4728-806D-928DD3C07F01"}
    first = rows(http.post("/OpenApi2/Customers", json=body))[0]
    again = rows(http.post("/OpenApi2/Customers", json=body))[0]
    assert again == first  # same edit date: nothing was processed the second time
    assert writes(http) == 1


def test_known_customer_id_updates_that_record(http: httpx.Client) -> None:
    cid = "16d33318-1ab4-4728-806d-928dd3c07f01"
    rows(http.post("/OpenApi2/Customers", json={**PAT, "CustomerId": cid}))
    updated = rows(http.post("/OpenApi2/Customers", json={"CustomerId": cid, "Email": "pat@example.com"}))[0]
    assert updated["CustomerId"] == cid.upper()
    assert updated["Email"] == "pat@example.com"
    assert updated["Address1"] == PAT["Address1"]  # our reading: an update is sparse
    assert http.get("/_sandbox/customers").json()["count"] == 1
    assert writes(http) == 2


def test_name_is_built_from_first_and_last_name_when_absent(http: httpx.Client) -> None:
    stored = rows(http.post("/OpenApi2/Customers", json={"FirstName": "Pat", "LastName": "Benatar"}))[0]
    assert stored["Name"] == "Pat Benatar"
    cid = stored["CustomerId"]
    renamed = rows(http.post("/OpenApi2/Customers", json={"CustomerId": cid, "LastName": "Giraldo"}))[0]
    assert renamed["Name"] == "Pat Giraldo"
    explicit = rows(
        http.post(
            "/OpenApi2/Customers", json={"CustomerId": cid, "Name": "P. Giraldo", "FirstName": "Patricia"}
        )
    )[0]
    assert explicit["Name"] == "P. Giraldo"


@pytest.mark.parametrize("bad", ["cust-42", "16D33318-1AB4-4728-806D", "", 42])
def test_malformed_customer_id_is_rejected_in_fieldpine_shape(http: httpx.Client, bad: object) -> None:
    response = http.post("/OpenApi2/Customers", json={**PAT, "CustomerId": bad})
    if bad == "":
        # An empty id means "allocate one for me", as if it were absent.
        assert response.status_code == 200
        return
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["Code"] == 2003
    assert "UUID" in error["Message"]
    assert http.get("/_sandbox/customers").json()["count"] == 0


@pytest.mark.parametrize(
    "body", [[PAT], {"Name": 42}, {"EUCitizen": "yes"}], ids=["not-an-object", "name-not-text", "eu-not-bool"]
)
def test_invalid_bodies_are_rejected(http: httpx.Client, body: object) -> None:
    response = http.post("/OpenApi2/Customers", json=body)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"Code", "Message"}


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/OpenApi2/Customers", "limit"),
        ("/openapi2/customers", "LIMIT"),
        ("/OPENAPI2/CUSTOMERS/", "Limit"),
        ("/OpenApi2_RM123/Customers", "limit"),
        ("/openapi2_rm123/CUSTOMERS", "lImIt"),
    ],
)
def test_paths_and_parameter_names_are_case_insensitive(http: httpx.Client, path: str, param: str) -> None:
    for n in range(3):
        http.post("/OpenApi2/Customers", json={"Name": f"Customer {n}"})
    assert len(rows(http.get(path, params={param: 2}))) == 2
    found = rows(http.get(path, params={param.upper().replace("LIMIT", "ENGLISHQUERY"): "customer 1"}))
    assert [r["Name"] for r in found] == ["Customer 1"]


def test_unknown_path_is_404(http: httpx.Client) -> None:
    assert http.get("/OpenApi2/Products").status_code == 404
    assert http.get("/OpenApi3/Customers").status_code == 404


def test_api_key_is_required(transport: SyncASGITransport) -> None:
    with httpx.Client(transport=transport, base_url="http://sandbox") as anon:
        response = anon.get("/OpenApi2/Customers")
        assert response.status_code == 401
        assert response.json()["error"]["Code"] == 1001
        assert anon.get("/OpenApi2/Customers", headers={"X-Api-Key": "anything"}).status_code == 200
        assert anon.post("/OpenApi2/Customers", json=PAT).status_code == 401


def test_restricted_tokens() -> None:
    sb = FieldpineSandbox(tokens=["right"])
    t = SyncASGITransport(sb.app)
    try:
        with httpx.Client(transport=t, base_url="http://sandbox") as c:
            assert c.get("/OpenApi2/Customers", headers={"X-Api-Key": "wrong"}).status_code == 401
            assert c.get("/OpenApi2/Customers", headers={"X-Api-Key": "right"}).status_code == 200
    finally:
        t.shutdown()


def test_free_text_search_on_name_email_and_phone(http: httpx.Client) -> None:
    http.post("/OpenApi2/Customers", json={**PAT, "Email": "pat@rock.example"})
    http.post("/OpenApi2/Customers", json={"Name": "Joan Jett", "Phone": "+1 555 010 9999"})
    http.post("/OpenApi2/Customers", json={"Name": "Acme", "CompanyName": "Benatar Holdings"})

    def names(q: str) -> list[str]:
        return sorted(
            str(r["Name"]) for r in rows(http.get("/OpenApi2/Customers", params={"englishquery": q}))
        )

    assert names("benatar") == ["Acme", "Pat Benatar"]
    assert names("pat benatar") == ["Pat Benatar"]
    assert names("rock.example") == ["Pat Benatar"]
    assert names("5550109999") == ["Joan Jett"]
    assert names("+61121234") == ["Pat Benatar"]
    assert names("nobody") == []


def test_editdtu_after_accepts_date_forms_with_iso_time_precision(
    http: httpx.Client, sandbox: FieldpineSandbox
) -> None:
    for name, at in (
        ("Old", "2020-01-16T23:59:59.000000Z"),
        ("Day", "2020-01-17T10:11:12.000000Z"),
        ("Late", "2020-01-17T10:11:13.500000Z"),
    ):
        cid = rows(http.post("/OpenApi2/Customers", json={"Name": name}))[0]["CustomerId"]
        record = sandbox.store.get(str(cid))
        assert record is not None
        sandbox.store.put(str(cid), {**record, "LastEditDt": at})
        sandbox.on_reset()  # drop the cached edit-date index after editing the store directly

    def names(q: str) -> list[str]:
        return [str(r["Name"]) for r in rows(http.get("/OpenApi2/Customers", params={"englishquery": q}))]

    assert names("editdtu after 17-jan-2020") == ["Late", "Day"]
    assert names("EditDtu After 17-JAN-2020") == ["Late", "Day"]
    assert names("editdtu after 2020-01-17T10:11:12Z") == ["Late", "Day"]
    assert names("editdtu after 2020-01-17T10:11:13Z") == ["Late"]
    assert names("editdtu after 2020-01-17T10:11:14Z") == []
    assert names("editdtu after 2020-01-17T12:11:12+02:00") == ["Late", "Day"]
    assert names("editdtu after 18-jan-2020") == []
    assert names("late editdtu after 17-jan-2020") == ["Late"]  # with free text: the scanning path
    assert names("old editdtu after 17-jan-2020") == []
    bad = http.get("/OpenApi2/Customers", params={"englishquery": "editdtu after yesterday"})
    assert bad.status_code == 400
    assert bad.json()["error"]["Code"] == 2003


def test_customerid_query_selects_one_record(http: httpx.Client) -> None:
    cid = rows(http.post("/OpenApi2/Customers", json=PAT))[0]["CustomerId"]
    http.post("/OpenApi2/Customers", json={"Name": "Someone Else"})
    found = rows(http.get("/OpenApi2/Customers", params={"englishquery": f"customerid {str(cid).lower()}"}))
    assert [r["CustomerId"] for r in found] == [cid]
    missing = f"customerid {uuid.uuid4()}"
    assert rows(http.get("/OpenApi2/Customers", params={"englishquery": missing})) == []


def test_account_filters(http: httpx.Client) -> None:
    accounts = {"A": 1234, "B": 1234, "C": 99, "D": None}
    for name, account in accounts.items():
        http.post("/_sandbox/edit", json={"fields": {"Name": name, "AccountId": account}})
    http.post(
        "/_sandbox/edit", json={"fields": {"Name": "Retired", "AccountId": 1234, "AccountRetired": True}}
    )

    def names(flt: str) -> list[str]:
        return sorted(str(r["Name"]) for r in rows(http.get("/OpenApi2/Customers", params={"filter": flt})))

    assert names("account") == ["A", "B", "C"]
    assert names("account=1234") == ["A", "B"]
    assert names("ACCOUNT=99") == ["C"]
    assert names("account=5") == []
    assert http.get("/OpenApi2/Customers", params={"filter": "account=x"}).status_code == 400


def test_default_order_is_edit_date_descending_and_pages_from_one(http: httpx.Client) -> None:
    ids = [rows(http.post("/OpenApi2/Customers", json={"Name": f"C{n}"}))[0]["CustomerId"] for n in range(7)]
    # Edit the oldest again: it becomes the most recently edited.
    http.post("/OpenApi2/Customers", json={"CustomerId": ids[0], "Name": "C0 again"})
    expected = [ids[0], *reversed(ids[1:])]
    paged = []
    for page in (1, 2, 3):
        paged += [
            r["CustomerId"] for r in rows(http.get("/OpenApi2/Customers", params={"limit": 3, "page": page}))
        ]
    assert paged == expected
    assert rows(http.get("/OpenApi2/Customers", params={"limit": 3, "page": 4})) == []
    assert http.get("/OpenApi2/Customers", params={"page": 0}).status_code == 400
    edits = [r["LastEditDt"] for r in rows(http.get("/OpenApi2/Customers", params={"limit": 0}))]
    assert edits == sorted(edits, reverse=True)


def test_limit_zero_streams_a_large_listing_in_one_call(
    http: httpx.Client, sandbox: FieldpineSandbox, transport: SyncASGITransport
) -> None:
    assert http.post("/_sandbox/seed", json={"count": 30_000}).json()["total"] == 30_000
    # Talk ASGI directly: SyncASGITransport re-buffers answers, which would hide how they are sent.
    messages: list[Message] = []

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/OpenApi2/Customers",
            "raw_path": b"/OpenApi2/Customers",
            "query_string": b"limit=0",
            "root_path": "",
            "server": ("sandbox", 80),
            "client": ("t", 1),
            "headers": [(b"host", b"sandbox"), (b"x-api-key", API_KEY.encode())],
        }

        done = asyncio.Event()
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            messages.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await sandbox.app(scope, receive, send)

    transport.run(call())
    start, *bodies = messages
    assert start["status"] == 200
    assert b"content-length" not in dict(start["headers"])
    chunks = [m["body"] for m in bodies if m.get("body")]
    assert len(chunks) > 30_000 // 500  # many pieces, none of them the whole answer
    assert max(len(c) for c in chunks) < len(b"".join(chunks)) / 10
    data = json.loads(b"".join(chunks))
    assert data["RecordCount"] == 30_000
    assert len({r["CustomerId"] for r in data["Data"]}) == 30_000
    # Without limit the sandbox answers its default page, not everything.
    assert len(rows(http.get("/OpenApi2/Customers"))) == 100


def test_seeding_100k_customers_is_fast_and_realistic(http: httpx.Client) -> None:
    started = time.monotonic()
    answer = http.post("/_sandbox/seed", json={"count": 100_000}).json()
    assert time.monotonic() - started < 20
    assert answer["total"] == 100_000
    sample = rows(http.get("/OpenApi2/Customers", params={"limit": 50, "page": 7}))
    for record in sample:
        assert record["Name"] == f"{record['FirstName']} {record['LastName']}"
        assert "@" in str(record["Email"])
        assert str(record["Mobile"]).startswith("+")
        assert datetime.fromisoformat(str(record["LastEditDt"])) < datetime.now(UTC)
    assert http.post("/_sandbox/seed", json={"count": -1}).status_code == 422


def test_rate_limit_threshold_gives_429_in_fieldpine_shape(http: httpx.Client) -> None:
    http.post("/_sandbox/faults", json={"rate_limit_requests": 2, "rate_limit_window_s": 30})
    assert http.get("/OpenApi2/Customers").status_code == 200
    assert http.get("/OpenApi2/Customers").status_code == 200
    refused = http.get("/OpenApi2/Customers")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "30"
    assert refused.json()["error"]["Code"] == 3001
    # The budget is per API key.
    assert http.get("/OpenApi2/Customers", headers={"X-Api-Key": "other"}).status_code == 200


def _hooks(
    receiver: Receiver, transport: SyncASGITransport, sandbox: FieldpineSandbox
) -> list[dict[str, str]]:
    assert transport.run(sandbox.webhooks.drain(10))
    events = []
    for headers, body in receiver.requests:
        expected = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-fieldpine-hmac"] == expected
        assert headers["content-type"] == "application/json"
        events.append(json.loads(body))
    return events


def test_hooks_fire_for_api_writes_and_till_edits_signed(
    http: httpx.Client, receiver: Receiver, transport: SyncASGITransport, sandbox: FieldpineSandbox
) -> None:
    cid = rows(http.post("/OpenApi2/Customers", json=PAT))[0]["CustomerId"]
    http.post("/OpenApi2/Customers", json=PAT)  # resend: not processed, no hook
    http.post("/_sandbox/edit", json={"id": cid, "fields": {"Email": "pat@till.example"}})
    created_at_till = http.post("/_sandbox/edit", json={"fields": {"Name": "Walk In"}}).json()["CustomerId"]
    events = _hooks(receiver, transport, sandbox)
    assert sorted(e["CustomerId"] for e in events) == sorted([cid, cid, created_at_till])
    assert {e["Event"] for e in events} == {"CustomerChanged"}
    assert len({e["EventId"] for e in events}) == 3
    for event in events:
        at = datetime.fromisoformat(event["Time"])
        assert timedelta(0) <= datetime.now(UTC) - at < timedelta(minutes=1)


def test_hooks_are_opt_in(receiver: Receiver) -> None:
    sb = FieldpineSandbox(
        webhook_url="http://receiver/hooks", webhook_transport=httpx.ASGITransport(app=receiver.app)
    )
    t = SyncASGITransport(sb.app)
    try:
        with httpx.Client(transport=t, base_url="http://sandbox", headers={"X-Api-Key": API_KEY}) as c:
            assert c.post("/OpenApi2/Customers", json=PAT).status_code == 200
        assert t.run(sb.webhooks.drain(5))
        assert receiver.requests == []
        assert sb.webhooks.stats["emitted"] == 0
    finally:
        t.shutdown()


def test_till_edit_of_unknown_customer_is_404(http: httpx.Client) -> None:
    response = http.post("/_sandbox/edit", json={"id": str(uuid.uuid4()), "fields": {"Name": "x"}})
    assert response.status_code == 404
    assert http.post("/_sandbox/edit", json={"fields": {"Name": 5}}).status_code == 422


def test_state_survives_a_restart_including_resend_memory(tmp_path: Path) -> None:
    path = tmp_path / "fieldpine.json"
    first = FieldpineSandbox(persist_path=path, seed=1)
    t1 = SyncASGITransport(first.app)
    try:
        with httpx.Client(transport=t1, base_url="http://sandbox", headers={"X-Api-Key": API_KEY}) as c:
            cid = rows(c.post("/OpenApi2/Customers", json=PAT))[0]["CustomerId"]
    finally:
        t1.shutdown()
    second = FieldpineSandbox(persist_path=path, seed=2)
    t2 = SyncASGITransport(second.app)
    try:
        with httpx.Client(transport=t2, base_url="http://sandbox", headers={"X-Api-Key": API_KEY}) as c:
            assert rows(c.post("/OpenApi2/Customers", json=PAT))[0]["CustomerId"] == cid
            assert [r["CustomerId"] for r in rows(c.get("/OpenApi2/Customers"))] == [cid]
            assert c.get("/_sandbox/stats").json()["writes"] == 0
    finally:
        t2.shutdown()
