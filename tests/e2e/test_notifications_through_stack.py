"""Issue 4's promises with real processes: the auth service writes an outbox row, the worker's
relay moves it to Redis, the consumer decides, and the e-mail reaches a real SMTP listener."""

from __future__ import annotations

import re

import pytest

from tests.conftest import unique_email

pytestmark = pytest.mark.e2e
PASSWORD = "correcto-caballo-bateria"


async def test_sign_up_sends_a_verification_email_with_a_working_link(gateway, mailbox):
    email = unique_email("verif")
    await gateway.ok("""mutation($i: SignUpInput!) { signUp(input: $i) { success } }""",
                     {"i": {"email": email, "password": PASSWORD, "fullName": "Rosa Díaz", "organizationName": "Flores Rosa"}})
    [message] = await mailbox.wait_for(email)
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    link = re.search(r"https?://\S+completar-registro\?token=([\w-]+)", text)
    assert link, text
    assert link.group(1) in html
    assert "Rosa" in text
    r = await gateway.ok("""mutation($t: String!) { completeSignUp(token: $t) { tokens { accessToken } userErrors { code } } }""",
                         {"t": link.group(1)})
    me = await gateway.ok("{ me { email emailVerified } }", token=r["completeSignUp"]["tokens"]["accessToken"])
    assert me["me"] == {"email": email, "emailVerified": True}
