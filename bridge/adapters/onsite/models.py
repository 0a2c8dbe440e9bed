"""OnSite's XML documents as typed models, and the one safe way to parse XML here.

OnSite speaks XML only. Everything we read from the wire goes through `parse_xml`,
which never expands entities, never loads a DTD and never touches the network; a
document that declares a DTD at all (the carrier of billion-laughs and external-entity
attacks) is refused, because OnSite itself never sends one.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from lxml import etree
from pydantic_xml import BaseXmlModel, attr, element, wrapped


class UnsafeXmlError(ValueError):
    """A document that declares a DTD or entities, or is not well-formed XML."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
    )


def parse_xml(data: bytes | str) -> etree._Element:
    """Parse untrusted XML with entity expansion, DTD loading and network access off."""
    raw = data.encode() if isinstance(data, str) else data
    # Cheap first gate; the docinfo check below catches any spelling this misses.
    head = raw.upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise UnsafeXmlError("document declares a DTD or entities; refused (entity expansion is off)")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as err:
        raise UnsafeXmlError(f"not well-formed XML: {err}") from err
    if root is None:
        raise UnsafeXmlError("empty XML document")
    docinfo = root.getroottree().docinfo
    doctype = str(getattr(docinfo, "doctype", "") or "")
    if doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXmlError("document declares a DTD; refused")
    if any(isinstance(node, etree._Entity) for node in root.iter()):
        raise UnsafeXmlError("document contains entity references; refused")
    return root


M = TypeVar("M", bound=BaseXmlModel)


def as_bytes(document: str | bytes) -> bytes:
    return document.encode() if isinstance(document, str) else document


def load(model: type[M], data: bytes | str) -> M:
    """Safely parse `data` and validate it as `model` (the root tag must match)."""
    root = parse_xml(data)
    expected = model.__xml_tag__
    if expected and root.tag != expected:
        raise UnsafeXmlError(f"expected a <{expected}> document, got <{root.tag}>")
    return model.from_xml_tree(cast(Any, root))


class Name(BaseXmlModel, tag="name", search_mode="unordered"):
    first: str | None = element(default=None)
    last: str | None = element(default=None)


class PhoneNumber(BaseXmlModel, tag="phone_number", search_mode="unordered"):
    id: int | None = attr(default=None)
    main: bool | None = element(default=None)
    type: str | None = element(default=None)
    list_order: int | None = element(default=None)
    number: str | None = element(default=None)


class Address(BaseXmlModel, tag="address", search_mode="unordered"):
    address1: str | None = element(default=None)
    address2: str | None = element(default=None)
    city: str | None = element(default=None)
    state: str | None = element(default=None)
    country: str | None = element(default=None)
    zip: str | None = element(default=None)


class Customer(BaseXmlModel, tag="customer", search_mode="unordered"):
    """The customer record, the fields posbridge reads and writes; the rest is ignored."""

    id: int | None = attr(default=None)
    uri: str | None = attr(default=None)
    created: str | None = element(default=None)
    modified: str | None = element(default=None)
    name: Name | None = element(default=None)
    company: str | None = element(default=None)
    email: str | None = element(default=None)
    homepage: str | None = element(default=None)
    phone_numbers: list[PhoneNumber] | None = wrapped(
        "phone_numbers", element(tag="phone_number", default=None)
    )
    is_company: bool | None = element(default=None)
    billing: Address | None = wrapped("billing", element(tag="address", default=None))
    shipping: Address | None = wrapped("shipping", element(tag="address", default=None))
    birthday: str | None = element(default=None)
    customer_id: str | None = element(default=None)
    import_id: str | None = element(default=None)
    notes: str | None = element(default=None)

    def native(self) -> dict[str, Any]:
        """The JSON-serialisable dict the engine stores as `ExternalRecord.native`."""
        return self.model_dump(mode="json")

    @classmethod
    def from_native(cls, native: dict[str, Any]) -> Customer:
        return cls.model_validate(native)

    def body(self) -> bytes:
        """The request body: absent (None) elements are left out, so a PUT stays sparse."""
        return as_bytes(self.to_xml(exclude_none=True))


class CustomerList(BaseXmlModel, tag="customers", search_mode="unordered"):
    total_count: int = attr()
    customers: list[Customer] = element(tag="customer", default_factory=list)


class CustomerLink(BaseXmlModel, tag="customer"):
    id: int = attr()
    uri: str | None = attr(default=None)


class Cell(BaseXmlModel, tag="cell", search_mode="unordered"):
    type: str | None = element(default=None)
    value: str | None = element(default=None)


class Row(BaseXmlModel, tag="row", search_mode="unordered"):
    links: list[CustomerLink] = wrapped("links/link", element(tag="customer", default_factory=list))
    cells: list[Cell] = element(tag="cell", default_factory=list)

    @property
    def customer_id(self) -> int | None:
        return self.links[0].id if self.links else None


class SearchResults(BaseXmlModel, tag="data", search_mode="unordered"):
    total_count: int = wrapped("info", element(tag="total_count"))
    rows: list[Row] = wrapped("rows", element(tag="row", default_factory=list))


class Page(BaseXmlModel, tag="page"):
    offset: int = element()
    count: int = element()


class ColumnRef(BaseXmlModel, tag="column"):
    id: str = attr()


class SortBy(BaseXmlModel, tag="sort_by_column"):
    column: ColumnRef = element()
    order_by: str = element(default="ASC")


class SearchQuery(BaseXmlModel, tag="search_query"):
    columns: list[ColumnRef] = wrapped("columns", element(tag="column", default_factory=list))
    sort_by_column: SortBy | None = element(default=None)
    filters: str | None = element(default=None)


class Search(BaseXmlModel, tag="search"):
    page: Page = element()
    search_query: SearchQuery = element()


class LocalizableMessage(BaseXmlModel, tag="localizable_message", search_mode="unordered"):
    type: str | None = attr(default=None)
    plain_message: str | None = element(default=None)


class ErrorDocument(BaseXmlModel, tag="error", search_mode="unordered"):
    class_: str | None = attr(name="class", default=None)
    type: str | None = attr(default=None)
    message: LocalizableMessage | None = element(default=None)

    @property
    def text(self) -> str:
        if self.message and self.message.plain_message:
            return self.message.plain_message
        return self.type or self.class_ or "error"
