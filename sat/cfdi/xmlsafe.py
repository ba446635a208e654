"""The one way this project parses untrusted XML (CFDIs uploaded or returned by a PAC).

No DTDs, no entity expansion, no network access, no `recover` (a malformed CFDI is rejected,
never silently repaired), and a size cap so a hostile upload cannot exhaust memory.
"""

from __future__ import annotations

from lxml import etree

# A CFDI with hundreds of concepts stays well under 5 MB; SAT's own limit for a PAC is 2 MB-ish.
MAX_XML_BYTES = 5 * 1024 * 1024


class UnsafeXmlError(ValueError):
    """The document is not well-formed, too large, or uses DTD/entity features we refuse."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        dtd_validation=False,
        load_dtd=False,
        huge_tree=False,
        recover=False,
        remove_blank_text=False,
    )


def parse_xml(data: bytes) -> etree._Element:
    """Parse `data` into an element tree root or raise `UnsafeXmlError`."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeXmlError("XML must be given as bytes")
    if len(data) > MAX_XML_BYTES:
        raise UnsafeXmlError(f"XML larger than {MAX_XML_BYTES} bytes")
    try:
        root = etree.fromstring(bytes(data), parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"XML mal formado: {exc}") from exc
    # A DOCTYPE is never legitimate in a CFDI; refusing it outright closes XXE/billion-laughs.
    if root.getroottree().docinfo.doctype:
        raise UnsafeXmlError("XML con DOCTYPE no permitido")
    return root
