"""Demo data for `make dev`: issuer EKU9003173C9 with SAT's 2023 test CSD and one customer."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from sqlalchemy import select

from shared.runtime import Runtime
from subgraphs.invoice import models as m
from subgraphs.invoice import service

HERE = Path(__file__).resolve().parent
DEMO_CUSTOMER_RFC = "XIA190128J61"


async def ensure_demo_issuer(runtime: Runtime, organization_id: uuid.UUID | str) -> bool:
    """Configure the demo issuer, CSD and customer once; True when something was created."""
    org = uuid.UUID(str(organization_id))
    created = False
    async with runtime.sessionmaker() as session:
        issuer = await service.get_issuer(session, org)
        has_csd = await service.active_csd(session, org)
        has_customer = await session.scalar(select(m.Customer.id).where(
            m.Customer.organization_id == org, m.Customer.rfc == DEMO_CUSTOMER_RFC))
    if issuer is None:
        await service.save_issuer(runtime, org, {"rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE",
                                                 "tax_regime": "601", "postal_code": "42501"})
        created = True
    if has_csd is None:
        cer = base64.b64encode((HERE / "eku9003173c9_csd_2023.cer").read_bytes()).decode()
        key = base64.b64encode((HERE / "eku9003173c9_csd_2023.key").read_bytes()).decode()
        await service.upload_csd(runtime, org, None, cer, key, "12345678a")
        created = True
    if has_customer is None:
        await service.create_customer(runtime, org, {
            "rfc": DEMO_CUSTOMER_RFC, "legal_name": "XENON INDUSTRIAL ARTICLES", "tax_regime": "601",
            "postal_code": "76343", "cfdi_use": "G03", "email": "compras@xenon.example.mx",
            "products": [{"product_code": "84111506", "description": "Servicio de facturación", "unit_code": "E48",
                          "unit_price": "1000.00", "tax_object": "02",
                          "taxes": [{"tax": "002", "factor_type": "Tasa", "rate": "0.160000", "withholding": False}]}],
        })
        created = True
    return created
