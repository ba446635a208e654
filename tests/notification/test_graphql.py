"""The notification subgraph over HTTP, with real users and tokens from the auth subgraph: the
inbox, read/archive, preferences, organization settings, the User entity, tenant isolation."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from shared.events import make_event
from subgraphs.notification import service
from subgraphs.notification.models import EmailMessage
from tests.events.helpers import invoice_stamped
from tests.notification.conftest import claims, token_with

INBOX = """query($first: Int, $after: String, $unreadOnly: Boolean! = false) {
  notifications(first: $first, after: $after, unreadOnly: $unreadOnly) {
    edges { cursor node { id type title body data read readAt createdAt } }
    pageInfo { hasNextPage hasPreviousPage endCursor } } unreadCount }"""
MARK = """mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) { updatedCount unreadCount userErrors { field code message } } }"""
MARK_ALL = "mutation { markAllNotificationsRead { updatedCount unreadCount userErrors { code } } }"
ARCHIVE = """mutation($id: ID!) { archiveNotification(id: $id) { notification { id archivedAt read } userErrors { field code message } } }"""
PREFS = "{ notificationPreferences { category channel enabled locked } }"
UPDATE_PREF = """mutation($c: NotificationCategory!, $ch: NotificationChannel!, $e: Boolean!) {
  updateNotificationPreference(category: $c, channel: $ch, enabled: $e) {
    preference { category channel enabled locked } userErrors { field code message } } }"""
ORG_SETTINGS = "{ organizationNotificationSettings { sendCfdiToCustomer defaults { category channel enabled locked } } }"
UPDATE_ORG = """mutation($send: Boolean, $defaults: [NotificationDefaultInput!]) {
  updateOrganizationNotificationSettings(sendCfdiToCustomer: $send, defaults: $defaults) {
    settings { sendCfdiToCustomer defaults { category channel enabled } } userErrors { field code message } } }"""
ENTITIES = """query($reps: [_Any!]!) { _entities(representations: $reps) {
  ... on User { id unreadNotificationCount notificationPreferences { category channel enabled } } } }"""


async def notify(rt, user_id, org_id, n: int = 1) -> list[str]:
    """`n` in-app notifications for the user (stamped invoices they created), oldest first."""
    ids = []
    for _ in range(n):
        handled = await service.handle_event(rt, make_event(invoice_stamped(created_by=user_id, customer_email=None),
                                                            organization_id=org_id, actor_id=user_id))
        ids += [str(x.id) for x in handled.notifications]
    return ids


async def test_inbox_pages_newest_first_with_keyset_cursors(rt, ngql, sign_up):
    acct = await sign_up()
    user, org = claims(acct.token)
    ids = await notify(rt, user, org, 5)

    page1 = (await ngql.ok(INBOX, {"first": 2}, token=acct.token))
    conn = page1["notifications"]
    assert [e["node"]["id"] for e in conn["edges"]] == ids[::-1][:2]
    assert conn["pageInfo"]["hasNextPage"] and not conn["pageInfo"]["hasPreviousPage"]
    assert page1["unreadCount"] == 5
    node = conn["edges"][0]["node"]
    assert node["type"] == "invoice.stamped" and node["title"] == "Factura A-123 timbrada" and node["read"] is False
    assert node["data"]["label"] == "A-123"

    conn2 = (await ngql.ok(INBOX, {"first": 2, "after": conn["pageInfo"]["endCursor"]}, token=acct.token))["notifications"]
    assert [e["node"]["id"] for e in conn2["edges"]] == ids[::-1][2:4]
    conn3 = (await ngql.ok(INBOX, {"first": 2, "after": conn2["pageInfo"]["endCursor"]}, token=acct.token))["notifications"]
    assert [e["node"]["id"] for e in conn3["edges"]] == ids[:1]
    assert conn3["pageInfo"]["hasNextPage"] is False


async def test_bad_cursor_and_page_size_are_typed_errors(ngql, sign_up):
    acct = await sign_up()
    r = await ngql.execute(INBOX, {"first": 2, "after": "no-es-cursor"}, token=acct.token)
    assert r.error_codes == ["INVALID_CURSOR"]
    r = await ngql.execute(INBOX, {"first": 2, "after": "WyJ4Il0="}, token=acct.token)  # ["x"]: well-formed, wrong shape
    assert r.error_codes == ["INVALID_CURSOR"]
    r = await ngql.execute(INBOX, {"first": 1000}, token=acct.token)
    assert r.error_codes == ["INVALID_PAGE_SIZE"]


async def test_mark_read_unread_only_and_mark_all(rt, ngql, sign_up):
    acct = await sign_up()
    user, org = claims(acct.token)
    ids = await notify(rt, user, org, 3)

    r = (await ngql.ok(MARK, {"ids": [ids[0], ids[1]]}, token=acct.token))["markNotificationsRead"]
    assert r == {"updatedCount": 2, "unreadCount": 1, "userErrors": []}
    unread = (await ngql.ok(INBOX, {"unreadOnly": True}, token=acct.token))["notifications"]["edges"]
    assert [e["node"]["id"] for e in unread] == [ids[2]]
    everything = (await ngql.ok(INBOX, {}, token=acct.token))["notifications"]["edges"]
    assert {e["node"]["id"]: e["node"]["read"] for e in everything} == {ids[0]: True, ids[1]: True, ids[2]: False}

    r = (await ngql.ok(MARK, {"ids": ["no-es-uuid"]}, token=acct.token))["markNotificationsRead"]
    assert [(e["code"], e["field"]) for e in r["userErrors"]] == [("INVALID_ID", ["ids", "0"])]

    r = (await ngql.ok(MARK_ALL, token=acct.token))["markAllNotificationsRead"]
    assert r == {"updatedCount": 1, "unreadCount": 0, "userErrors": []}
    assert (await ngql.ok("{ unreadCount }", token=acct.token))["unreadCount"] == 0


async def test_archive_takes_it_out_of_the_inbox(rt, ngql, sign_up):
    acct = await sign_up()
    user, org = claims(acct.token)
    ids = await notify(rt, user, org, 2)

    r = (await ngql.ok(ARCHIVE, {"id": ids[0]}, token=acct.token))["archiveNotification"]
    assert r["userErrors"] == [] and r["notification"]["id"] == ids[0] and r["notification"]["archivedAt"]
    inbox = (await ngql.ok(INBOX, {}, token=acct.token))
    assert [e["node"]["id"] for e in inbox["notifications"]["edges"]] == [ids[1]]
    assert inbox["unreadCount"] == 1

    r = (await ngql.ok(ARCHIVE, {"id": str(uuid.uuid4())}, token=acct.token))["archiveNotification"]
    assert [e["code"] for e in r["userErrors"]] == ["NOT_FOUND"] and r["notification"] is None


async def test_preferences_and_the_locked_security_category(rt, ngql, sign_up):
    acct = await sign_up()
    user, org = claims(acct.token)
    prefs = (await ngql.ok(PREFS, token=acct.token))["notificationPreferences"]
    assert len(prefs) == 10 and all(p["enabled"] for p in prefs)
    assert {(p["category"], p["locked"]) for p in prefs if p["channel"] == "EMAIL"} == {
        ("ACCOUNT", False), ("SECURITY", True), ("INVOICING", False), ("EXPENSES", False), ("GENERAL", False)}

    r = (await ngql.ok(UPDATE_PREF, {"c": "SECURITY", "ch": "EMAIL", "e": False}, token=acct.token))["updateNotificationPreference"]
    assert [e["code"] for e in r["userErrors"]] == ["PREFERENCE_LOCKED"] and r["preference"] is None

    r = (await ngql.ok(UPDATE_PREF, {"c": "INVOICING", "ch": "EMAIL", "e": False}, token=acct.token))["updateNotificationPreference"]
    assert r == {"preference": {"category": "INVOICING", "channel": "EMAIL", "enabled": False, "locked": False}, "userErrors": []}
    prefs = {(p["category"], p["channel"]): p["enabled"] for p in (await ngql.ok(PREFS, token=acct.token))["notificationPreferences"]}
    assert prefs[("INVOICING", "EMAIL")] is False and prefs[("INVOICING", "IN_APP")] is True

    # The consumer honours it: e-mail off -> in-app only.
    await _register(rt, user, acct.email)  # a known address, so only the preference stops the e-mail
    ev = make_event(invoice_stamped(created_by=user, customer_email=None), organization_id=org, actor_id=user)
    handled = await service.handle_event(rt, ev)
    assert len(handled.notifications) == 1 and handled.email_ids == []


async def _register(rt, user_id, email):
    from shared.events import UserRegistered

    await service.handle_event(rt, make_event(UserRegistered(user_id=user_id, email=email, full_name="Ana", locale="es-MX"),
                                              organization_id=None, actor_id=user_id))


async def test_organization_settings_need_notification_manage(rt, ngql, sign_up, auth_app):
    owner = await sign_up()
    user, org = claims(owner.token)
    before = (await ngql.ok(ORG_SETTINGS, token=owner.token))["organizationNotificationSettings"]
    assert before["sendCfdiToCustomer"] is False

    r = (await ngql.ok(UPDATE_ORG, {"send": True, "defaults": [{"category": "INVOICING", "channel": "EMAIL", "enabled": False}]},
                       token=owner.token))["updateOrganizationNotificationSettings"]
    assert r["userErrors"] == [] and r["settings"]["sendCfdiToCustomer"] is True
    assert {"category": "INVOICING", "channel": "EMAIL", "enabled": False} in r["settings"]["defaults"]

    r = (await ngql.ok(UPDATE_ORG, {"defaults": [{"category": "SECURITY", "channel": "EMAIL", "enabled": False}]},
                       token=owner.token))["updateOrganizationNotificationSettings"]
    assert [(e["code"], e["field"]) for e in r["userErrors"]] == [("PREFERENCE_LOCKED", ["defaults", "0", "enabled"])]

    # Members inherit the default; the customer now gets the CFDI.
    await _register(rt, user, owner.email)
    handled = await service.handle_event(rt, make_event(invoice_stamped(created_by=user), organization_id=org, actor_id=user))
    async with rt.sessionmaker() as s:
        templates = sorted((await s.execute(select(EmailMessage.template).where(EmailMessage.id.in_(handled.email_ids)))).scalars())
    assert templates == ["cfdi_to_customer"]

    member_token = await token_with(auth_app.state.runtime, user, org, ["invoice:read"])
    r = await ngql.execute(UPDATE_ORG, {"send": False}, token=member_token)
    assert r.error_codes == ["FORBIDDEN"]
    after = (await ngql.ok(ORG_SETTINGS, token=owner.token))["organizationNotificationSettings"]
    assert after["sendCfdiToCustomer"] is True


async def test_tenants_never_see_or_touch_each_others_notifications(rt, ngql, sign_up):
    a, b = await sign_up(org="Org A"), await sign_up(org="Org B")
    ua, oa = claims(a.token)
    ub, ob = claims(b.token)
    a_ids = await notify(rt, ua, oa, 2)
    # Even a notification addressed to A's user id but in B's organization stays out of A's inbox.
    stray = await notify(rt, ua, ob, 1)

    b_inbox = await ngql.ok(INBOX, {}, token=b.token)
    assert b_inbox["notifications"]["edges"] == [] and b_inbox["unreadCount"] == 0
    r = (await ngql.ok(MARK, {"ids": a_ids}, token=b.token))["markNotificationsRead"]
    assert r["updatedCount"] == 0
    r = (await ngql.ok(ARCHIVE, {"id": a_ids[0]}, token=b.token))["archiveNotification"]
    assert [e["code"] for e in r["userErrors"]] == ["NOT_FOUND"]

    a_inbox = await ngql.ok(INBOX, {}, token=a.token)
    assert sorted(e["node"]["id"] for e in a_inbox["notifications"]["edges"]) == sorted(a_ids)
    assert stray[0] not in [e["node"]["id"] for e in a_inbox["notifications"]["edges"]]
    assert a_inbox["unreadCount"] == 2 and all(not e["node"]["read"] for e in a_inbox["notifications"]["edges"])


async def test_user_entity_answers_only_for_the_caller(rt, ngql, sign_up):
    a, b = await sign_up(), await sign_up()
    ua, oa = claims(a.token)
    await notify(rt, ua, oa, 3)
    reps = [{"__typename": "User", "id": str(ua)}]

    mine = (await ngql.ok(ENTITIES, {"reps": reps}, token=a.token))["_entities"]
    assert mine[0]["id"] == str(ua) and mine[0]["unreadNotificationCount"] == 3
    assert len(mine[0]["notificationPreferences"]) == 10  # 5 categories x 2 channels

    theirs = (await ngql.ok(ENTITIES, {"reps": reps}, token=b.token))["_entities"]
    assert theirs == [{"id": str(ua), "unreadNotificationCount": None, "notificationPreferences": []}]


async def test_anonymous_callers_get_nothing(ngql):
    r = await ngql.execute("{ unreadCount }")
    assert r.error_codes == ["UNAUTHENTICATED"]
    r = await ngql.execute(INBOX, {}, token="not-a-token")
    assert "INVALID_TOKEN" in r.error_codes
