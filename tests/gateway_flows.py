"""What a client does through the gateway, step by step, for tests that need an issuer ready to
stamp (end-to-end and fault tests)."""

from __future__ import annotations

import uuid

from tests.conftest import unique_email
from tests.invoice.conftest import CREATE_CUSTOMER, CSD_PASSWORD, ISSUER, SAVE_ISSUER, UPLOAD_CSD, concept, csd_files

PASSWORD = "correcto-caballo-bateria"
STAMP = """mutation($id: ID!, $k: String!) { stampInvoice(id: $id, idempotencyKey: $k) {
    invoice { id status } userErrors { code field message } } }"""
STAMP_MANY = """mutation($items: [StampInvoiceInput!]!) { stampInvoices(items: $items) {
    results { invoice { id status } userErrors { code field message } } userErrors { code field message } } }"""


async def sign_up_by_mail(gateway, mailbox, account: dict) -> dict:
    """An account the way a person gets one through the gateway: signUp, the mailed link (received
    by the SMTP listener), completeSignUp. Returns the tokens."""
    import re

    earlier = len(mailbox.to(account["email"]))  # e.g. an invitation that came first
    await gateway.ok("mutation($i: SignUpInput!) { signUp(input: $i) { success } }", {"i": account})
    message = (await mailbox.wait_for(account["email"], count=earlier + 1))[-1]
    token = re.search(r"completar-registro\?token=([\w-]+)", message.get_body(preferencelist=("plain",)).get_content()).group(1)
    done = await gateway.ok("""mutation($t: String!) { completeSignUp(token: $t) {
        tokens { accessToken refreshToken organizationId } userErrors { code } } }""", {"t": token})
    assert done["completeSignUp"]["userErrors"] == [], done
    return done["completeSignUp"]["tokens"]


async def join_as_member(gateway, mailbox, owner: str, role: str) -> tuple[str, str]:
    """A new person invited into the owner's organization with `role`, signed up and joined by
    the mailed invitation: their access token there and their user id."""
    import re

    email = unique_email("miembro")
    await gateway.ok("mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { invitation { id } } }",
                     {"e": email, "r": role}, token=owner)
    [invite] = await mailbox.wait_for(email)
    invitation = re.search(r"invitacion\?token=([\w-]+)", invite.get_body(preferencelist=("plain",)).get_content()).group(1)
    own = await sign_up_by_mail(gateway, mailbox, {"email": email, "password": PASSWORD, "fullName": "Miembro", "organizationName": "Propia"})
    joined = await gateway.ok("mutation($t: String!) { acceptInvitation(token: $t) { tokens { accessToken } } }", {"t": invitation},
                              token=own["accessToken"])
    token = joined["acceptInvitation"]["tokens"]["accessToken"]
    user_id = (await gateway.ok("{ me { id } }", token=token))["me"]["id"]
    return token, user_id


async def new_issuer(gateway, mailbox, *, customer_email: str):
    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("emisor"), "password": PASSWORD,
                                                      "fullName": "Contadora Kemper", "organizationName": "Escuela Kemper Urgate"}))["accessToken"]
    series = "E" + uuid.uuid4().hex[:8].upper()  # distinct CFDIs per test organization (same demo RFC)
    saved = (await gateway.ok(SAVE_ISSUER, {"i": {**ISSUER, "defaultSeries": series}}, token=token))["saveIssuer"]
    assert saved["userErrors"] == []
    cer, key = csd_files()
    up = (await gateway.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": CSD_PASSWORD}, token=token))["uploadCsd"]
    assert up["userErrors"] == [] and up["certificate"]["rfc"] == "EKU9003173C9"
    customer = {"rfc": "XIA190128J61", "legalName": "XENON INDUSTRIAL ARTICLES", "taxRegime": "601",
                "postalCode": "76343", "cfdiUse": "G03", "email": customer_email}
    cust = (await gateway.ok(CREATE_CUSTOMER, {"i": customer}, token=token))["createCustomer"]
    assert cust["userErrors"] == []
    return token, cust["customer"]["id"]


async def create_invoice(gateway, token, customer_id, price: str) -> dict:
    r = await gateway.ok("""mutation($i: InvoiceInput!) { createInvoice(input: $i) {
        invoice { id status total } issues { code field } userErrors { code field message } } }""",
                         {"i": {"customerId": customer_id, "paymentForm": "03", "paymentMethod": "PUE",
                                "concepts": [concept(price=price)]}}, token=token)
    assert r["createInvoice"]["userErrors"] == [], r
    return r["createInvoice"]["invoice"]
