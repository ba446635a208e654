"""Single-use links exist only in the e-mail sent (issue #7, Medium 7).

Sign-up, reset and invitation flows run end to end through the gateway, the relay, the
consumer and the mail worker; afterwards the raw tokens are nowhere in the outbox tables, the Redis
event stream or the stored e-mail rows, while the links in the received e-mails work."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest
from redis.asyncio import Redis

from shared.config import to_plain_url
from tests.conftest import unique_email

pytestmark = pytest.mark.e2e
PASSWORD = "correcto-caballo-bateria"


def _token(message, path: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(rf"https?://\S+{path}\?token=([\w-]+)", text)
    assert found, text
    return found.group(1)


async def _stored_text(database_url: str) -> str:
    conn = await asyncpg.connect(to_plain_url(database_url))
    try:
        parts = []
        for schema in ("auth", "invoice", "notification", "expense"):
            if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.outbox"):
                parts += [r[0] for r in await conn.fetch(f"SELECT payload::text FROM {schema}.outbox")]
        parts += [r[0] for r in await conn.fetch("SELECT row_to_json(m)::text FROM notification.email_messages m")]
        return "\n".join(parts)
    finally:
        await conn.close()


async def _stream_text(redis_url: str) -> str:
    redis = Redis.from_url(redis_url)
    try:
        entries = await redis.xrange("events")
        return "\n".join(v.decode(errors="replace") for _, fields in entries for v in fields.values())
    finally:
        await redis.aclose()


async def test_links_live_only_in_the_sent_mail(gateway, mailbox, stack, e2e_database_url, e2e_redis_url):
    owner_email, invitee = unique_email("links"), unique_email("invitee")
    await gateway.ok("""mutation($i: SignUpInput!) { signUp(input: $i) { success } }""",
                     {"i": {"email": owner_email, "password": PASSWORD, "fullName": "Rosa Díaz", "organizationName": "Flores"}})
    [sign_up_mail] = await mailbox.wait_for(owner_email)
    sign_up = _token(sign_up_mail, "completar-registro")
    r = await gateway.ok("mutation($t: String!) { completeSignUp(token: $t) { tokens { accessToken } } }", {"t": sign_up})
    owner = r["completeSignUp"]["tokens"]["accessToken"]
    # A second sign-up for the now-taken address: its owner is told, no link is sent.
    await gateway.ok("""mutation($i: SignUpInput!) { signUp(input: $i) { success } }""",
                     {"i": {"email": owner_email, "password": PASSWORD, "fullName": "Intruso", "organizationName": "Otra"}})
    notice = (await mailbox.wait_for(owner_email, count=2))[1]
    assert "token=" not in notice.get_body(preferencelist=("plain",)).get_content()

    # Two reset requests: two mails; completing one voids the other.
    for _ in range(2):
        await gateway.ok("mutation($e: String!) { requestPasswordReset(email: $e) { success } }", {"e": owner_email})
    mails = await mailbox.wait_for(owner_email, count=4)
    first_reset, second_reset = (_token(m, "restablecer-contrasena") for m in mails[2:4])

    await gateway.ok("mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { invitation { id } } }",
                     {"e": invitee, "r": "MEMBER"}, token=owner)
    [invite_mail] = await mailbox.wait_for(invitee)
    invitation = _token(invite_mail, "invitacion")

    stored, stream = await _stored_text(e2e_database_url), await _stream_text(e2e_redis_url)
    for token in (sign_up, first_reset, second_reset, invitation):
        assert token not in stored and token not in stream

    # The links received work (each once), and a reset voids the other outstanding reset link.
    again = await gateway.ok("mutation($t: String!) { completeSignUp(token: $t) { userErrors { code } } }", {"t": sign_up})
    assert again["completeSignUp"]["userErrors"][0]["code"] == "INVALID_TOKEN"
    reset = "mutation($i: ResetPasswordInput!) { resetPassword(input: $i) { success userErrors { code } } }"
    ok = await gateway.ok(reset, {"i": {"token": second_reset, "newPassword": "nueva-contrasena-segura"}})
    assert ok["resetPassword"]["success"]
    voided = await gateway.ok(reset, {"i": {"token": first_reset, "newPassword": "otra-contrasena-segura"}})
    assert voided["resetPassword"]["userErrors"][0]["code"] == "INVALID_TOKEN"
    joined = await gateway.ok("""mutation($i: SignUpInput!) { signUp(input: $i) { success } }""",
                              {"i": {"email": invitee, "password": PASSWORD, "fullName": "Invitada", "organizationName": "Propia"}})
    assert joined["signUp"]["success"]
    invitee_token = (await gateway.ok("mutation($t: String!) { completeSignUp(token: $t) { tokens { accessToken } } }",
                                      {"t": _token((await mailbox.wait_for(invitee, count=2))[1], "completar-registro")}))
    accept = await gateway.ok("mutation($t: String!) { acceptInvitation(token: $t) { tokens { organizationId } userErrors { code } } }",
                              {"t": invitation}, token=invitee_token["completeSignUp"]["tokens"]["accessToken"])
    assert accept["acceptInvitation"]["userErrors"] == []


async def test_reset_for_an_unknown_address_sends_nothing(gateway, mailbox, e2e_database_url):
    nobody = unique_email("nobody")
    r = await gateway.ok("mutation($e: String!) { requestPasswordReset(email: $e) { success userErrors { code } } }", {"e": nobody})
    assert r["requestPasswordReset"] == {"success": True, "userErrors": []}
    conn = await asyncpg.connect(to_plain_url(e2e_database_url))
    try:
        status = None
        for _ in range(300):  # the worker settles the message: auth has no account to mint a link for
            status = await conn.fetchval("SELECT status FROM notification.email_messages WHERE to_address = $1", nobody)
            if status not in (None, "queued"):
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert status == "failed_permanent"
    assert mailbox.to(nobody) == []
