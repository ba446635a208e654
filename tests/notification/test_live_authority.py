"""`notificationReceived` ends when the member it belongs to is removed: the auth service's event
travels the real path (auth outbox -> relay -> authority channel -> the process's hub) and ends the
stream with STALE_TOKEN, while another member's stream stays open. Both listen through one Redis
connection."""

from __future__ import annotations

import json

from websockets.asyncio.client import connect

from shared.bus import AUTHORITY_CHANNEL, user_channel
from shared.events import MemberRemoved, PasswordChanged
from tests.events.helpers import emit_auth, until
from tests.notification.conftest import claims, serve_app
from tests.notification.test_subscription import SUBSCRIPTION, _recv, fresh_app
from workers.relay import relay_once


async def _open(host: str, token: str):
    ws = await connect(f"ws://{host}/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    assert (await _recv(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
    return ws


async def test_removed_member_stream_ends_and_others_go_on(rt, settings, notification_runtime_factory, auth_http, sign_up):
    removed, stays = await sign_up(), await sign_up()
    (r_user, r_org), (s_user, _) = claims(removed.token), claims(stays.token)
    app = fresh_app(settings, notification_runtime_factory)
    async with serve_app(app) as host:
        live = app.state.runtime.live
        ws_removed, ws_stays = await _open(host, removed.token), await _open(host, stays.token)
        try:
            await until(lambda: live.listening(user_channel(r_user)) == 1 and live.listening(user_channel(s_user)) == 1
                         and live.subscribed(AUTHORITY_CHANNEL), "both subscribed")
            # An auth event that carries no authority change goes nowhere live.
            await emit_auth(rt, PasswordChanged(user_id=r_user, email="x@example.mx"), organization_id=r_org)
            await emit_auth(rt, MemberRemoved(user_id=r_user), organization_id=r_org)
            await relay_once(rt)

            msg = await _recv(ws_removed)
            errors = msg["payload"]["errors"] if msg["type"] == "next" else msg["payload"]
            assert errors[0]["extensions"] == {"code": "STALE_TOKEN", "reason": "MEMBER_REMOVED"}
            assert (await _recv(ws_removed))["type"] == "complete"
            await until(lambda: live.listening(user_channel(r_user)) == 0, "the removed member's stream released")
            assert live.listening(user_channel(s_user)) == 1
            # Two subscriptions, two user channels, one connection: one Redis subscriber each.
            assert (await rt.redis.pubsub_numsub(user_channel(s_user)))[0][1] == 1
        finally:
            await ws_removed.close()
            await ws_stays.close()
