"""The mail server down while e-mail is due: every message is sent once it is back, exactly once,
and the outbox is drained; the client's sign-up never noticed."""

from __future__ import annotations

import asyncio

import asyncpg

from shared.config import to_plain_url
from tests.conftest import unique_email
from tests.faults.helpers import wait_outbox_drained
from tests.gateway_flows import PASSWORD

SIGN_UP = "mutation($i: SignUpInput!) { signUp(input: $i) { success userErrors { code } } }"


async def _mail_rows(database_url: str, addresses: list[str]) -> list:
    conn = await asyncpg.connect(to_plain_url(database_url))
    try:
        return await conn.fetch("SELECT to_address, status, attempts FROM notification.email_messages "
                                "WHERE to_address = ANY($1::text[])", addresses)
    finally:
        await conn.close()


async def test_mail_server_down_then_back_sends_each_message_once(full_stack, gateway, mailbox):
    db = full_stack.env["DATABASE_URL"]
    mailbox.stop()
    addresses = [unique_email("sin-correo") for _ in range(3)]
    for address in addresses:  # each sign-up owes its link by e-mail
        r = await gateway.ok(SIGN_UP, {"i": {"email": address, "password": PASSWORD, "fullName": "Ana Correo",
                                             "organizationName": "Correo SA"}})
        assert r["signUp"]["userErrors"] == [] and r["signUp"]["success"] is True

    # Down for as long as it takes every message to fail at least once.
    while True:
        rows = await _mail_rows(db, addresses)
        if len(rows) == len(addresses) and all(r["attempts"] >= 1 for r in rows):
            break
        await asyncio.sleep(0.2)
    assert all(r["status"] == "queued" for r in rows), rows
    mailbox.start()

    for address in addresses:
        await mailbox.wait_for(address, timeout=60)
    rows = await _mail_rows(db, addresses)
    assert sorted((r["to_address"], r["status"]) for r in rows) == sorted((a, "sent") for a in addresses)
    assert all(len(mailbox.to(a)) == 1 for a in addresses)  # a sent row is never sent again
    await wait_outbox_drained(db)
