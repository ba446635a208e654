"""XSD validation of a CFDI 4.0 against SAT's cfdv40.xsd (+ TFD 1.1 and Pagos 2.0).

Two schema sets, both compiled lazily once per process:
- "full": SAT's files as published.
- "lean": identical except that the two huge enumerations of catCFDI.xsd (c_ClaveProdServ,
  ~53k values, and c_CodigoPostal, ~96k) are replaced by their lexical pattern. libxml2 checks
  an enumeration linearly, so with "full" each concept costs ~1.3 ms; "lean" makes validation
  of a 100-concept invoice ~30x cheaper. Membership of those codes is then checked by
  `rules.catalog_codes` (CFDI40162/CFDI40126) with a hash lookup, so issuing runs rules + lean;
  "full" stays the default for anything that is not also going through the rules.

Why a wrapper schema: cfdv40.xsd's Complemento is `xs:any` with strict processing, so a stamped
CFDI (or a type P with pago20:Pagos) only validates if the complement schemas are loaded into the
same schema set. The wrapper imports all three. Compiling it costs ~120 ms (catCFDI.xsd is 5 MB of
enumerations), so it is compiled once per process, lazily, under a lock. `XMLSchema.validate` is
not safe to share across threads (it keeps the error log on the object), so validation itself also
takes the lock; one validation takes a few ms.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

XSD_DIR = Path(__file__).with_name("resources") / "xsd"

_WRAPPER = f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:facturacion:cfdi-wrapper">
  <xs:import namespace="http://www.sat.gob.mx/cfd/4" schemaLocation="{(XSD_DIR / 'cfdv40.xsd').as_uri()}"/>
  <xs:import namespace="http://www.sat.gob.mx/TimbreFiscalDigital"
             schemaLocation="{(XSD_DIR / 'TimbreFiscalDigitalv11.xsd').as_uri()}"/>
  <xs:import namespace="http://www.sat.gob.mx/Pagos20" schemaLocation="{(XSD_DIR / 'Pagos20.xsd').as_uri()}"/>
</xs:schema>
"""

_lock = threading.Lock()
_schemas: dict[str, etree.XMLSchema] = {}

# simpleType name -> lexical pattern that replaces its enumeration in the lean schema set.
_LEAN_PATTERNS = {"c_ClaveProdServ": "[0-9]{8}", "c_CodigoPostal": "[0-9]{5}"}


@dataclass(frozen=True)
class XsdIssue:
    """One schema violation: where (line and XPath-like path) and libxml2's message."""

    line: int
    path: str
    message: str


def _lean_catalog_xsd() -> bytes:
    text = (XSD_DIR / "catCFDI.xsd").read_text("utf-8")
    for name, pattern in _LEAN_PATTERNS.items():
        text, count = re.subn(
            rf'(<xs:simpleType name="{name}">)(.*?)(</xs:simpleType>)',
            rf'\1<xs:restriction base="xs:string"><xs:pattern value="{pattern}"/></xs:restriction>\3',
            text,
            count=1,
            flags=re.S,
        )
        if count != 1:
            raise RuntimeError(f"{name} not found in catCFDI.xsd")
    return text.encode("utf-8")


class _LeanCatalogResolver(etree.Resolver):
    """Serve the lean catCFDI.xsd wherever the schemas import catCFDI.xsd."""

    def resolve(self, system_url, public_id, context):  # noqa: ANN001 - lxml API
        if system_url and system_url.endswith("/catCFDI.xsd"):
            return self.resolve_string(_lean_catalog_xsd(), context, base_url=system_url)
        return None


def _get_schema(mode: str) -> etree.XMLSchema:
    schema = _schemas.get(mode)
    if schema is None:
        # Trusted local files: the parser may read them but never the network.
        parser = etree.XMLParser(no_network=True, resolve_entities=False)
        if mode == "lean":
            parser.resolvers.add(_LeanCatalogResolver())
        root = etree.fromstring(_WRAPPER.encode("utf-8"), parser=parser, base_url=(XSD_DIR / "wrapper.xsd").as_uri())
        schema = _schemas[mode] = etree.XMLSchema(root)
    return schema


def validate_xsd(document: etree._Element | bytes, mode: str = "full") -> list[XsdIssue]:
    """Schema issues of a CFDI (element, or bytes parsed with the hardened parser); [] when valid.

    `mode`: "full" (SAT's schemas as published) or "lean" (see module docstring).
    """
    if mode not in ("full", "lean"):
        raise ValueError("mode debe ser 'full' o 'lean'")
    if isinstance(document, (bytes, bytearray)):
        from .xmlsafe import parse_xml

        document = parse_xml(bytes(document))
    tree = document.getroottree() if document.getparent() is None else etree.ElementTree(document)
    with _lock:
        schema = _get_schema(mode)
        if schema.validate(tree):
            return []
        return [XsdIssue(e.line, e.path or "", e.message) for e in schema.error_log]
