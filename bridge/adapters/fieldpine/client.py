"""Fieldpine OpenApi over httpx: paths, auth, streaming listings, error translation.

Fieldpine answers listings of hundreds of thousands of rows in one body, so listings are
read as a stream and parsed incrementally (`iter_data`): memory stays that of one row,
whatever the page size. The envelope (`{"RecordCount": n, "Data": [...]}`) is
undocumented; only `Data` is relied on.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from bridge.adapters.errors import (
    AdapterError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)

_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


class StreamFormatError(ValueError):
    """A listing body that is not the JSON object we expect (or was cut short)."""


def error_from_response(response: httpx.Response) -> AdapterError:
    """Fieldpine's `{"error":{"Code":..., "Message":...}}` (or anything else) -> our error type."""
    reason = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        reason = f"Fieldpine error {error.get('Code')}: {error.get('Message')}"
    elif response.text:
        reason = f"{reason}: {response.text[:200]}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_for_status(response.status_code, reason, retry_after=retry_after)


class _Buffer:
    """Text decoded from a byte stream, consumed from the front."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Append the next chunk; False at the end of the stream."""
        if self.eof:
            return False
        for chunk in self._chunks:
            piece = self._decoder.decode(chunk)
            if piece:
                self.text += piece
                return True
        self.text += self._decoder.decode(b"", final=True)
        self.eof = True
        return False

    def peek(self) -> str:
        """The next non-blank character ("" at the end), without consuming it."""
        if self.pos > 65536:  # drop what was consumed, between values only
            self.text = self.text[self.pos :]
            self.pos = 0
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            raise StreamFormatError(f"expected {char!r}, found {found or 'end of body'!r}")
        self.pos += 1

    def value(self) -> Any:
        """One complete JSON value. A value touching the end of the buffer may be cut
        (a number), so it is only accepted once something follows it or the stream ended."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                if self.more():
                    continue
                raise StreamFormatError(f"malformed JSON in listing: {err}") from err
            if end < len(self.text) or self.eof or not self.more():
                self.pos = end
                return value


def iter_data(chunks: Iterable[bytes], key: str = "Data") -> Iterator[Any]:
    """The elements of the top-level array `key` of a JSON object, one at a time."""
    buf = _Buffer(chunks)
    buf.expect("{")
    if buf.peek() == "}":
        return
    while True:
        name = buf.value()
        if not isinstance(name, str):
            raise StreamFormatError("object key is not a string")
        buf.expect(":")
        if name == key and buf.peek() == "[":
            buf.pos += 1
            if buf.peek() == "]":
                buf.pos += 1
            else:
                while True:
                    yield buf.value()
                    if buf.peek() == "]":
                        buf.pos += 1
                        break
                    buf.expect(",")
        else:
            buf.value()  # RecordCount and anything else small we do not use
        if buf.peek() == "}":
            return
        buf.expect(",")


class FieldpineClient:
    """The two calls the bridge needs: POST /Customers and a streamed GET /Customers."""

    def __init__(self, http: httpx.Client, rm_system: str | None) -> None:
        self.http = http
        # Hosted retailers live under /OpenApi2_<RmSystem>/ (POS-APIS.md).
        self.path = f"/OpenApi2_{rm_system}/Customers" if rm_system else "/OpenApi2/Customers"

    def post_customer(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST /Customers; the stored record when the answer carries it (undocumented)."""
        try:
            response = self.http.post(self.path, json=body)
        except httpx.TimeoutException as err:
            raise RetryableError(f"Fieldpine POST timed out: {err}") from err
        except httpx.TransportError as err:
            # The POST may have been committed; resending the same body is safe at Fieldpine.
            raise RetryableError(f"Fieldpine POST failed in transit: {type(err).__name__}: {err}") from err
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            answer = response.json()
        except ValueError:
            return None
        rows = answer.get("Data") if isinstance(answer, dict) else None
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and rows[0].get("CustomerId"):
            return rows[0]
        return None

    def iter_customers(self, params: dict[str, str | int]) -> Iterator[dict[str, Any]]:
        """GET /Customers, rows yielded while the body is still arriving."""
        try:
            with self.http.stream("GET", self.path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                for row in iter_data(response.iter_bytes()):
                    if isinstance(row, dict):
                        yield row
        except httpx.TimeoutException as err:
            raise RetryableError(f"Fieldpine GET timed out: {err}") from err
        except httpx.TransportError as err:
            raise RetryableError(f"Fieldpine GET failed in transit: {type(err).__name__}: {err}") from err
        except StreamFormatError as err:
            # Most often a body cut short; the next attempt reads it again.
            raise RetryableError(f"Fieldpine listing unreadable: {err}") from err
