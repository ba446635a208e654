"""Build and sign a TimbreFiscalDigital 1.1 for a sealed CFDI — what a PAC does when stamping.

Used by the sandbox PAC simulator and by tests; a real stamp always comes from an authorised PAC.
The SelloSAT is RSA-SHA256 over the TFD cadena (SAT's cadenaoriginal_TFD_1_1.xslt), signed with
the simulator's certificate whose number goes in NoCertificadoSAT.
"""

from __future__ import annotations

import base64
import uuid as uuid_lib
from datetime import datetime

from lxml import etree

from .build import tfd_element
from .cadena import tfd_cadena_original
from .csd import Csd
from .models import CFDI_NS, TFD_NS, TimbreFiscalDigital


def stamp_cfdi(
    comprobante: etree._Element,
    signer: Csd,
    pac_rfc: str,
    stamped_at: datetime,
    uuid: str | None = None,
    legend: str | None = None,
) -> TimbreFiscalDigital:
    """Append a signed tfd:TimbreFiscalDigital to cfdi:Complemento (created if missing).

    `comprobante` must already be sealed (its Sello becomes the timbre's SelloCFD).
    """
    seal = comprobante.get("Sello")
    if not seal:
        raise ValueError("el comprobante debe estar sellado antes de timbrarse")
    complement = comprobante.find(f"{{{CFDI_NS}}}Complemento")
    if complement is not None and complement.find(f"{{{TFD_NS}}}TimbreFiscalDigital") is not None:
        raise ValueError("el comprobante ya está timbrado")
    stamp = TimbreFiscalDigital(
        uuid=(uuid or str(uuid_lib.uuid4())).upper(),
        stamped_at=stamped_at,
        pac_rfc=pac_rfc,
        cfd_seal=seal,
        sat_certificate_number=signer.certificate_number,
        legend=legend,
    )
    element = tfd_element(stamp)
    stamp.sat_seal = base64.b64encode(signer.sign(tfd_cadena_original(element).encode("utf-8"))).decode("ascii")
    element.set("SelloSAT", stamp.sat_seal)
    if complement is None:
        # Complemento goes before Addenda (XSD sequence), i.e. last unless an Addenda exists.
        complement = etree.Element(f"{{{CFDI_NS}}}Complemento")
        addenda = comprobante.find(f"{{{CFDI_NS}}}Addenda")
        if addenda is not None:
            addenda.addprevious(complement)
        else:
            comprobante.append(complement)
    complement.append(element)
    return stamp
