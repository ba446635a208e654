"""Cadena original of a Comprobante 4.0 and of a TimbreFiscalDigital 1.1, via SAT's own XSLTs.

Why SAT's XSLT and not our own string builder: the cadena is what gets signed; the only
definition that PACs and SAT agree on is the XSLT they publish (libxslt runs the "2.0" sheet
correctly). Compiling it (≈35 included complement sheets) costs tens of ms, so each stylesheet
is compiled once per process, lazily, under a lock. lxml XSLT objects are safe to call from
several threads.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

from lxml import etree

from .models import TFD_NS

XSLT_DIR = Path(__file__).with_name("resources") / "xslt"
CFDI_XSLT = XSLT_DIR / "cadenaoriginal_4_0.xslt"
TFD_XSLT = XSLT_DIR / "cadenaoriginal_TFD_1_1.xslt"

_lock = threading.Lock()
_compiled: dict[Path, etree.XSLT] = {}


def _xslt(path: Path) -> etree.XSLT:
    transform = _compiled.get(path)
    if transform is None:
        with _lock:
            transform = _compiled.get(path)
            if transform is None:
                # Our own trusted file: a plain parser is fine; includes resolve relative to it.
                access = etree.XSLTAccessControl(
                    read_file=True, write_file=False, create_dir=False, read_network=False, write_network=False
                )
                transform = etree.XSLT(etree.parse(str(path)), access_control=access)
                _compiled[path] = transform
    return transform


def _run(path: Path, element: etree._Element) -> str:
    # Transform a standalone copy so the XSLT's "/" is this element, whatever tree it sits in.
    if element.getparent() is None:
        doc = element.getroottree()
    else:
        doc = etree.ElementTree(copy.deepcopy(element))
    return str(_xslt(path)(doc))


def cadena_original(comprobante: etree._Element) -> str:
    """Cadena original ("||4.0|...||") of a cfdi:Comprobante element."""
    return _run(CFDI_XSLT, comprobante)


def tfd_cadena_original(comprobante_or_tfd: etree._Element) -> str:
    """Cadena original of the timbre: pass the tfd:TimbreFiscalDigital or a stamped Comprobante."""
    tfd = comprobante_or_tfd
    if tfd.tag != f"{{{TFD_NS}}}TimbreFiscalDigital":
        found = comprobante_or_tfd.find(f".//{{{TFD_NS}}}TimbreFiscalDigital")
        if found is None:
            raise ValueError("el CFDI no tiene TimbreFiscalDigital")
        tfd = found
    return _run(TFD_XSLT, tfd)
