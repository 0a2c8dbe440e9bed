"""The OnSite sandbox on its own: auth, sessions and seats, locks, search, photos, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bridge.adapters.onsite.models import parse_xml
from bridge.adapters.onsite.sandbox import OnSiteSandbox
from bridge.sandbox.transport import SyncASGITransport

from .conftest import DEMO_AUTH, DEMO_HEADERS

FIXTURES = Path(__file__).parent.parent / "fixtures"
JANE = b"""<customer><name><first>Jane</first><last>Smith</last></name>
<email>jane@example.com</email>
<phone_numbers><phone_number id="1"><type>home</type><number>613-555-5555</number></phone_number>
</phone_numbers></customer>"""


def error_type(response: httpx.Response) -> str | None:
    root = parse_xml(response.content)
    assert root.tag == "error"
    assert root.findtext("localizable_message/plain_message")
    return root.get("type")


def search(
    client: httpx.Client,
    filters: str,
    *,
    count: int = 50,
    offset: int = 0,
    sort: str = "name",
    order: str = "ASC",
) -> httpx.Response:
    body = f"""<search><page><offset>{offset}</offset><count>{count}</count></page><search_query>
    <columns><column id="lsserver.search.column.id"/><column id="lsserver.search.column.name"/>
    <column id="lsserver.search.column.email"/></columns>
    <sort_by_column><column id="lsserver.search.column.{sort}"/><order_by>{order}</order_by></sort_by_column>
    <filters>{filters}</filters></search_query></search>"""
    return client.post("/api/customers/search/", content=body.encode())


def row_values(response: httpx.Response) -> list[list[str]]:
    root = parse_xml(response.content)
    return [[c.findtext("value") or "" for c in row.findall("cell")] for row in root.iter("row")]


@pytest.fixture
def client(raw: Callable[..., httpx.Client]) -> httpx.Client:
    return raw()


def test_basic_auth_is_required(raw: Callable[..., httpx.Client]) -> None:
    with raw(auth=None) as anonymous:
        response = anonymous.get("/api/customers/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert error_type(response) == "lsserver.error.authentication"
    with raw(auth=("lightspeed", "wrong")) as wrong:
        assert wrong.get("/api/customers/").status_code == 401


def test_app_ids_are_required(raw: Callable[..., httpx.Client]) -> None:
    with raw(headers={**DEMO_HEADERS, "user-agent": "curl/8.0"}) as no_app:
        assert no_app.get("/api/customers/").status_code == 403
    with raw(headers={"user-agent": DEMO_HEADERS["user-agent"]}) as no_private_id:
        response = no_private_id.get("/api/customers/")
    assert response.status_code == 403
    assert error_type(response) == "lsserver.error.application_not_authorized"


def test_credentials_can_be_restricted() -> None:
    sandbox = OnSiteSandbox(
        users={"clerk": "s3cret"}, app_ids=["com.example.bridge"], private_app_ids=["p-1"]
    )
    transport = SyncASGITransport(sandbox.app)
    headers = {"user-agent": "com.example.bridge/2.1", "x-pappid": "p-1"}
    with httpx.Client(
        base_url="http://sandbox", transport=transport, auth=DEMO_AUTH, headers=DEMO_HEADERS
    ) as demo:
        assert demo.get("/api/customers/").status_code == 401
    with httpx.Client(
        base_url="http://sandbox", transport=transport, auth=("clerk", "s3cret"), headers=headers
    ) as ours:
        assert ours.get("/api/customers/").status_code == 200
    transport.shutdown()


def test_session_cookie_seats_and_logout(sandbox: OnSiteSandbox, raw: Callable[..., httpx.Client]) -> None:
    sandbox.seat_limit = 2
    with raw() as first:
        response = first.get("/api/customers/")
        assert "LS_SERVER_SESSION_ID" in response.headers["set-cookie"]
        for _ in range(5):  # the cookie goes back: still one session
            assert first.get("/api/customers/").status_code == 200
        assert sandbox.open_sessions() == 1
        with raw() as second:
            assert second.get("/api/customers/").status_code == 200
            with raw() as third:
                response = third.get("/api/customers/")
                assert response.status_code == 403
                assert error_type(response) == "lsserver.error.no_available_seats"
            assert second.post("/api/sessions/current/logout/").status_code == 204
        with raw() as fourth:
            assert fourth.get("/api/customers/").status_code == 200


def test_stale_cookie_is_a_session_error(sandbox: OnSiteSandbox, client: httpx.Client) -> None:
    client.get("/api/customers/")
    sandbox.expire_sessions()
    response = client.get("/api/customers/")
    assert response.status_code == 401
    assert error_type(response) == "lsserver.error.session_expired"
    assert client.get("/api/customers/").status_code == 200  # cookie cleared: a new session


def test_create_get_and_list(client: httpx.Client, sandbox: OnSiteSandbox) -> None:
    for _ in range(3):
        response = client.post("/api/customers/", content=JANE)
        assert response.status_code == 201
    root = parse_xml(response.content)
    assert root.get("id") == "3"
    assert root.findtext("customer_id") == "C-3"
    assert root.get("uri") == "http://sandbox/api/customers/3/"
    assert root.findtext("phone_numbers/phone_number/main") == "true"
    assert root.findtext("modified") == root.findtext("created")
    got = parse_xml(client.get("/api/customers/2/").content)
    assert got.findtext("name/first") == "Jane"
    page = parse_xml(client.get("/api/customers/?count=2&offset=1").content)
    assert page.get("total_count") == "3"
    assert [c.get("id") for c in page.findall("customer")] == ["2", "3"]
    assert len(parse_xml(client.get("/api/customers/").content).findall("customer")) == 3
    missing = client.get("/api/customers/99/")
    assert missing.status_code == 404
    assert error_type(missing) == "lsserver.error.not_found"
    assert client.delete("/api/customers/1/").status_code == 405
    assert len(sandbox.ground_truth()) == 3


def test_put_needs_the_callers_lock(
    client: httpx.Client, raw: Callable[..., httpx.Client], sandbox: OnSiteSandbox
) -> None:
    client.post("/api/customers/", content=JANE)
    change = b"<customer><notes>vip</notes></customer>"
    response = client.put("/api/customers/1/", content=change)
    assert response.status_code == 403
    assert error_type(response) == "lsserver.error.not_locked"
    with raw() as other:
        assert other.request("LOCK", "/api/customers/1/").status_code == 200
        for method in ("LOCK", "PUT", "UNLOCK"):
            response = client.request(
                method, "/api/customers/1/", content=change if method == "PUT" else None
            )
            assert response.status_code == 403, method
            assert error_type(response) == "lsserver.error.resource_locked"
        other.post("/api/sessions/current/logout/")  # logging out releases its locks
    assert sandbox.lock_owners() == {}
    assert client.request("LOCK", "/api/customers/1/").status_code == 200
    assert client.request("LOCK", "/api/customers/1/").status_code == 200  # re-lock by the owner
    response = client.put("/api/customers/1/", content=change)
    assert response.status_code == 200
    record = parse_xml(response.content)
    assert record.findtext("notes") == "vip"
    assert record.findtext("email") == "jane@example.com"  # sparse: untouched
    assert record.findtext("modified") > record.findtext("created")
    assert client.request("UNLOCK", "/api/customers/1/").status_code == 200
    assert sandbox.lock_owners() == {}


def test_put_validates(client: httpx.Client, sandbox: OnSiteSandbox) -> None:
    client.post("/api/customers/", content=JANE)
    client.request("LOCK", "/api/customers/1/")
    for body in (
        b"<customer><birthday>1990-02-31</birthday></customer>",
        b"<customer><phone_numbers><phone_number id='9'><number>1</number></phone_number>"
        b"</phone_numbers></customer>",
        b"<customer><phone_numbers><phone_number id='2'><type>telex</type></phone_number>"
        b"</phone_numbers></customer>",
        b"<customer><is_company>maybe</is_company></customer>",
        b"<product/>",
        b"not xml",
    ):
        response = client.put("/api/customers/1/", content=body)
        assert response.status_code == 400, body
        assert error_type(response)
    assert sandbox.ground_truth()[0]["birthday"] == ""


def test_phone_main_flag_follows_the_caller(client: httpx.Client) -> None:
    client.post("/api/customers/", content=JANE)
    client.request("LOCK", "/api/customers/1/")
    body = b"""<customer><phone_numbers><phone_number id="2"><main>true</main><type>mobile</type>
    <number>613-555-0100</number></phone_number></phone_numbers></customer>"""
    root = parse_xml(client.put("/api/customers/1/", content=body).content)
    mains = [p.findtext("main") for p in root.iter("phone_number")]
    assert mains == ["false", "true", "false", "false"]


def test_search_criteria_match_the_documentation(client: httpx.Client) -> None:
    documented = parse_xml((FIXTURES / "search_criteria__all.xml").read_bytes())
    ours = parse_xml(client.get("/api/customers/search/").content)

    def ids(root: object, tag: str) -> list[tuple[str | None, str | None]]:
        return [(n.get("id"), n.findtext("type")) for n in root.iter(tag)]  # type: ignore[attr-defined]

    assert ids(ours, "column") == ids(documented, "column")
    assert ids(ours, "filter") == ids(documented, "filter")


def test_search_filters_paging_and_sorting(
    client: httpx.Client, sandbox: OnSiteSandbox, transport: SyncASGITransport
) -> None:
    people = [
        ("Jane", "Smith", "jane@example.com"),
        ("John", "Smith", "john@example.com"),
        ("Ada", "Lovelace", "ada@example.com"),
    ]
    for first, last, email in people:
        client.post(
            "/api/customers/",
            content=f"<customer><name><first>{first}</first><last>{last}</last>"
            f"</name><email>{email}</email></customer>".encode(),
        )
    client.post(
        "/api/customers/",
        content=b"<customer><company>O'Brien Ltd</company><is_company>true</is_company>"
        b"<phone_numbers><phone_number><type>work</type><number>+16135550100</number></phone_number>"
        b"</phone_numbers></customer>",
    )
    f = "lsserver.search.filters."
    assert row_values(search(client, f"{f}name CONTAINS 'smith'")) == [
        ["C-1", "Jane Smith", "jane@example.com"],
        ["C-2", "John Smith", "john@example.com"],
    ]
    assert [r[0] for r in row_values(search(client, f"{f}name CONTAINS 'smith'", order="DESC"))] == [
        "C-2",
        "C-1",
    ]
    assert [r[0] for r in row_values(search(client, f"{f}email = 'ADA@example.com'"))] == ["C-3"]
    assert [r[0] for r in row_values(search(client, f"{f}phone = '+16135550100'"))] == ["C-4"]
    assert [r[0] for r in row_values(search(client, f"{f}name = 'O''Brien Ltd'"))] == ["C-4"]
    assert [r[0] for r in row_values(search(client, f"{f}company = true"))] == ["C-4"]
    assert [r[0] for r in row_values(search(client, f"{f}customer_id = 'C-2'"))] == ["C-2"]
    both = f"{f}name CONTAINS 'Smith' AND {f}email STARTS_WITH 'jo'"
    assert [r[0] for r in row_values(search(client, both))] == ["C-2"]
    page = search(client, "", count=2, offset=2, sort="id")
    assert parse_xml(page.content).findtext("info/total_count") == "4"
    assert [r[0] for r in row_values(page)] == ["C-3", "C-4"]
    # modified_date: a till edit moves one customer past the cut-off
    cutoff = sandbox.now()
    transport.run(sandbox.till_edit({"id": 3, "fields": {"notes": "edited"}}))
    changed = search(client, f"{f}modified_date &gt;= '{cutoff}'")
    assert [r[0] for r in row_values(changed)] == ["C-3"]
    links = parse_xml(changed.content).findall("rows/row/links/link/customer")
    assert [(c.get("id"), c.get("uri")) for c in links] == [("3", "http://sandbox/api/customers/3/")]
    for bad in (f"{f}shoe_size = '9'", f"{f}name ~ 'x'", f"{f}modified_date >= 'yesterday'", "name = 'x'"):
        response = search(client, bad.replace(">", "&gt;"))
        assert response.status_code == 400, bad
        assert error_type(response) == "lsserver.error.invalid_search"


def test_photo_needs_lock_and_round_trips(client: httpx.Client) -> None:
    client.post("/api/customers/", content=JANE)
    url = "/api/customers/1/customer_photo/"
    assert client.get(url).status_code == 404
    assert client.post(url, content=b"\xff\xd8jpeg").status_code == 403
    client.request("LOCK", "/api/customers/1/")
    added = client.post(url, content=b"\xff\xd8jpeg")
    assert added.status_code == 201
    assert (
        parse_xml(added.content).find("photo").get("uri") == "http://sandbox/api/customers/1/customer_photo/"
    )
    assert client.put(url, content=b"\xff\xd8new").status_code == 204
    client.request("UNLOCK", "/api/customers/1/")
    assert client.get(url).content == b"\xff\xd8new"


def test_till_edit_creates_and_is_refused_while_locked(client: httpx.Client) -> None:
    response = client.post(
        "/_sandbox/edit",
        json={
            "fields": {"first": "Walk", "last": "In", "phone_numbers": [{"type": "mobile", "number": "1"}]}
        },
    )
    assert response.status_code == 200
    assert response.json()["customer_id"] == "C-1"
    assert response.json()["phone_numbers"][0]["main"] is True
    client.request("LOCK", "/api/customers/1/")
    assert client.post("/_sandbox/edit", json={"id": 1, "fields": {"notes": "x"}}).status_code == 422
    assert client.post("/_sandbox/edit", json={"id": 9, "fields": {"notes": "x"}}).status_code == 404
    assert client.get("/_sandbox/locks").json() == {"locks": {"1": next(iter(client.cookies.values()))}}


def test_no_webhooks_are_sent(transport: SyncASGITransport, client: httpx.Client) -> None:
    sandbox = transport.app.state.sandbox
    sandbox.webhooks.url = "http://receiver/hooks"
    client.post("/api/customers/", content=JANE)
    client.post("/_sandbox/edit", json={"id": 1, "fields": {"notes": "till"}})
    assert sandbox.webhooks.stats["emitted"] == 0


def test_lost_response_still_commits(client: httpx.Client, sandbox: OnSiteSandbox) -> None:
    client.get("/api/customers/")  # open the session first so the cookie is not lost
    sandbox.set_faults({"lose_response_after_commit_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        client.post("/api/customers/", content=JANE)
    assert len(sandbox.ground_truth()) == 1
