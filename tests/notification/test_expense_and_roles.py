"""Expense events and expiring CSDs reach people by role, from the membership projection that auth's
events build in the notification schema; preferences apply as for invoicing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select

from shared.events import (
    CsdExpiring, ExpenseApproved, ExpenseRejected, ExpenseSubmitted, MemberJoined, MemberRemoved, MemberRoleChanged,
    NextApproval, make_event,
)
from subgraphs.notification import service
from subgraphs.notification.decisions import EMAIL, IN_APP, Facts, Preferences, RecipientInfo, decide
from subgraphs.notification.models import Notification

ORG = uuid.uuid4()
MEMBER, APPROVER, APPROVER2, OWNER, ADMIN = (uuid.uuid4() for _ in range(5))
ROLES = {MEMBER: "MEMBER", APPROVER: "APPROVER", APPROVER2: "APPROVER", OWNER: "OWNER", ADMIN: "ADMIN"}
PEOPLE = {u: RecipientInfo(u, f"{r.lower()}-{str(u)[:4]}@example.mx", r.title()) for u, r in ROLES.items()}


def ref(**kw) -> dict:
    return {"expense_id": uuid.uuid4(), "submitter_id": MEMBER, "amount": Decimal("800"), "currency": "MXN",
            "amount_mxn": Decimal("800"), "merchant_name": "Papelería Sol", **kw}


def facts(prefs: Preferences | None = None) -> Facts:
    return Facts(recipients=PEOPLE, preferences=prefs or Preferences(), roles=ROLES)


def told(decision) -> set[uuid.UUID]:
    return {n.user_id for n in decision.in_app}


def test_submitted_tells_whoever_may_take_the_next_step_never_the_submitter():
    ev = make_event(ExpenseSubmitted(**ref(), next_approval=NextApproval(permission="expense:approve")),
                    organization_id=ORG, actor_id=MEMBER)
    d = decide(ev, facts())
    assert told(d) == {APPROVER, APPROVER2, OWNER, ADMIN}
    assert {m.to_address for m in d.emails} == {PEOPLE[u].email for u in (APPROVER, APPROVER2, OWNER, ADMIN)}
    assert "espera tu aprobación" in d.in_app[0].body


def test_an_owner_step_goes_to_owners_only_and_not_to_who_just_approved():
    ev = make_event(ExpenseApproved(**ref(), approver_id=APPROVER, fully_approved=False,
                                    next_approval=NextApproval(permission="expense:approve", role="OWNER")),
                    organization_id=ORG, actor_id=APPROVER)
    assert told(decide(ev, facts())) == {OWNER}


def test_final_approval_and_rejection_tell_the_submitter_with_preferences():
    ok = make_event(ExpenseApproved(**ref(), approver_id=OWNER, fully_approved=True), organization_id=ORG, actor_id=OWNER)
    assert told(decide(ok, facts())) == {MEMBER}
    no_mail = Preferences(user={(MEMBER, "expenses", EMAIL): False})
    rej = make_event(ExpenseRejected(**ref(), approver_id=OWNER, reason="Sin comprobante"), organization_id=ORG, actor_id=OWNER)
    d = decide(rej, facts(no_mail))
    assert told(d) == {MEMBER} and d.emails == () and "Sin comprobante" in d.in_app[0].body
    off = Preferences(org_defaults={("expenses", IN_APP): False})
    assert told(decide(rej, facts(off))) == set()


def test_expiring_csd_goes_to_the_admins():
    ev = make_event(CsdExpiring(certificate_number="3" * 20, rfc="EKU9003173C9",
                                valid_to=datetime.now(timezone.utc) + timedelta(days=10), days_left=10),
                    organization_id=ORG, actor_id=None)
    d = decide(ev, facts(Preferences(org_defaults={("security", EMAIL): False})))
    assert told(d) == {OWNER, ADMIN} and len(d.emails) == 2  # security notices ignore preferences


async def test_membership_events_build_the_projection_the_decisions_read(rt):
    org = uuid.uuid4()
    a, b = uuid.uuid4(), uuid.uuid4()
    for payload, at in ((MemberJoined(user_id=a, role="APPROVER"), 1), (MemberJoined(user_id=b, role="MEMBER"), 2),
                        (MemberRoleChanged(user_id=b, old_role="MEMBER", new_role="APPROVER"), 3),
                        (MemberRemoved(user_id=a), 4)):
        ev = make_event(payload, organization_id=org, actor_id=None)
        ev = ev.model_copy(update={"occurred_at": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=at)})
        await service.handle_event(rt, ev)
        await service.handle_event(rt, ev)  # redelivered: no change
    # A late copy of the first join does not resurrect the removed member.
    late = make_event(MemberJoined(user_id=a, role="APPROVER"), organization_id=org, actor_id=None)
    await service.handle_event(rt, late.model_copy(update={"occurred_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}))
    submitter = uuid.uuid4()
    ev = make_event(ExpenseSubmitted(**ref(submitter_id=submitter), next_approval=NextApproval(permission="expense:approve")),
                    organization_id=org, actor_id=submitter)
    await service.handle_event(rt, ev)
    async with rt.sessionmaker() as s:
        users = set((await s.execute(select(Notification.user_id).where(Notification.event_id == ev.id))).scalars())
    assert users == {b}
