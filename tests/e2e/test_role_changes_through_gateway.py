"""A role change or removal reaches the other subgraphs at once, through the real gateway (issue
#7, High 1): the invoice subgraph refuses the old token of a removed member and of a demoted one.
(The stack runs with AUTHZ_CACHE_SECONDS=0; with the default cache the bound is one second.)"""

from __future__ import annotations

import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import sign_up_by_mail
from tests.gateway_flows import PASSWORD, join_as_member

pytestmark = pytest.mark.e2e
INVOICES = "{ invoices(first: 1) { edges { node { id } } } }"


async def test_removed_and_demoted_members_old_tokens_are_refused_by_the_invoice_subgraph(gateway, mailbox):
    owner = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("duena"), "password": PASSWORD, "fullName": "Dueña",
                                                      "organizationName": "Tienda"}))["accessToken"]
    removed, removed_id = await join_as_member(gateway, mailbox, owner, "ACCOUNTANT")
    demoted, demoted_id = await join_as_member(gateway, mailbox, owner, "ACCOUNTANT")
    for token in (removed, demoted):
        assert (await gateway.execute(INVOICES, token=token)).errors is None

    await gateway.ok("mutation($u: ID!) { removeMember(userId: $u) { success } }", {"u": removed_id}, token=owner)
    await gateway.ok("mutation($u: ID!) { changeMemberRole(userId: $u, role: MEMBER) { membership { role } } }",
                     {"u": demoted_id}, token=owner)

    assert (await gateway.execute(INVOICES, token=removed)).error_codes == ["STALE_TOKEN"]
    assert (await gateway.execute(INVOICES, token=demoted)).error_codes == ["STALE_TOKEN"]
    assert (await gateway.execute(INVOICES, token=owner)).errors is None  # nobody else is affected
