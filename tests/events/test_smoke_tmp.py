from tests.events.helpers import emit_auth, user_registered, stream_event_ids
from workers.relay import relay_once
from workers.notifications import consume_once
from sqlalchemy import select
from subgraphs.notification.models import EmailMessage

async def test_smoke(rt):
    ev = await emit_auth(rt, user_registered(), organization_id=None)
    n = await relay_once(rt)
    assert n >= 1
    assert str(ev.id) in await stream_event_ids(rt.redis)
    c = await consume_once(rt)
    assert c >= 1
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(EmailMessage).where(EmailMessage.event_id == ev.id))).scalars().all()
    assert len(rows) == 1 and rows[0].template == "verify_email"
