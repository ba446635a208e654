"""A subgraph down answers partial data and an error naming the service, not `data: null` with
"Unexpected error."; once it is back the same query answers in full."""

from __future__ import annotations

from tests.conftest import unique_email
from tests.gateway_flows import sign_up_by_mail

QUERY = """{ me { fullName notificationPreferences { category } }
             invoices(first: 1) { edges { node { id } } }
             unreadCount }"""


async def _token(gateway, mailbox) -> str:
    tokens = await sign_up_by_mail(gateway, mailbox, {"email": unique_email("parcial"), "password": "correcto-caballo-bateria",
                                                      "fullName": "Ana Parcial", "organizationName": "Parcial SA"})
    return tokens["accessToken"]


async def test_notification_down_leaves_the_rest_of_the_answer_and_names_the_service(gateway, full_stack, mailbox):
    token = await _token(gateway, mailbox)
    assert (await gateway.ok(QUERY, token=token))["unreadCount"] == 0

    full_stack.kill("notification")
    r = await gateway.execute(QUERY, token=token)
    assert r.data is not None, r.errors
    assert r.data["me"]["fullName"] == "Ana Parcial"
    assert r.data["invoices"] == {"edges": []}
    assert r.data["unreadCount"] is None and r.data["me"]["notificationPreferences"] is None
    assert r.errors, "the client must be told what is missing"
    for err in r.errors:
        assert err["extensions"]["code"] == "SUBGRAPH_UNAVAILABLE", err
        assert err["extensions"]["serviceName"] == "notification", err
        assert "notification" in err["message"], err
    assert {tuple(e["path"]) for e in r.errors} >= {("unreadCount",), ("me", "notificationPreferences")}

    full_stack.start_subgraph("notification", full_stack.ports["notification"])
    assert (await gateway.ok(QUERY, token=token))["unreadCount"] == 0
