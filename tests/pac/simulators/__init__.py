"""Local simulators of Finkok (SOAP), SW Sapien (REST) and SAT's ConsultaCFDIService, written from
the providers' public documentation and SDKs. Real HTTP servers on loopback that validate requests
with our CFDI engine (XSD, Sello, CSD), keep state (timbres per CFDI, cancellations, receiver
requests) in one `SatLedger`, and inject faults (5xx, hangs, a hang after stamping).

They live apart from the adapters so the same tests run against the real test environments.
"""

from .core import Faults, SatLedger, StampingEngine
from .server import SimServer

__all__ = ["Faults", "SatLedger", "SimServer", "StampingEngine"]
