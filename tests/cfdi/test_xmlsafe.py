"""The hardened parser refuses DTDs, entity tricks and oversize input."""

from __future__ import annotations

import pytest

from sat.cfdi.verify import verify_cfdi
from sat.cfdi.xmlsafe import MAX_XML_BYTES, UnsafeXmlError, parse_xml

from .conftest import SAT_CERTS_DIR

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Serie="&x;"/>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<r>&lol3;</r>"""


@pytest.mark.parametrize("payload", [XXE, BILLION_LAUGHS, b'<!DOCTYPE r SYSTEM "http://example.com/x.dtd"><r/>'])
def test_refuses_dtd_and_entities(payload: bytes) -> None:
    with pytest.raises(UnsafeXmlError):
        parse_xml(payload)


def test_refuses_malformed_and_oversize() -> None:
    with pytest.raises(UnsafeXmlError):
        parse_xml(b'<r a="<"/>')
    with pytest.raises(UnsafeXmlError):
        parse_xml(b"<r>" + b" " * MAX_XML_BYTES + b"</r>")
    with pytest.raises(UnsafeXmlError):
        parse_xml("<r/>")  # type: ignore[arg-type]


def test_verify_reports_unsafe_xml_instead_of_raising() -> None:
    result = verify_cfdi(XXE, SAT_CERTS_DIR)
    assert not result.ok and result.errors == ["MALFORMED_XML"]
