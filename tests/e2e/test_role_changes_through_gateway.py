"""A role change or removal reaches the other subgraphs at once, through the real gateway (issue
#7, High 1): the invoice subgraph refuses the old token of a removed member and of a demoted one.
(The stack runs with AUTHZ_CACHE_SECONDS=0; with the default cache the bound is one second.)"""

from __future__ import annotations

import re

import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import sign_up_by_mail

pytestmark = pytest.mark.e2e
PASSWORD = "correcto-caballo-bateria"
INVOICES = "{ invoices(first: 1) { edges { node { id } } } }"


async def _member(gateway, mailbox, owner: str, role: str) -> tuple[str, str]:
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


async def test_removed_and_demoted_members_old_tokens_are_refused_by_the_invoice_subgraph(gateway, mailbox):
    owner = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("duena"), "password": PASSWORD, "fullName": "Dueña",
                                                      "organizationName": "Tienda"}))["accessToken"]
    removed, removed_id = await _member(gateway, mailbox, owner, "ACCOUNTANT")
    demoted, demoted_id = await _member(gateway, mailbox, owner, "ACCOUNTANT")
    for token in (removed, demoted):
        assert (await gateway.execute(INVOICES, token=token)).errors is None

    await gateway.ok("mutation($u: ID!) { removeMember(userId: $u) { success } }", {"u": removed_id}, token=owner)
    await gateway.ok("mutation($u: ID!) { changeMemberRole(userId: $u, role: MEMBER) { membership { role } } }",
                     {"u": demoted_id}, token=owner)

    assert (await gateway.execute(INVOICES, token=removed)).error_codes == ["STALE_TOKEN"]
    assert (await gateway.execute(INVOICES, token=demoted)).error_codes == ["STALE_TOKEN"]
    assert (await gateway.execute(INVOICES, token=owner)).errors is None  # nobody else is affected
