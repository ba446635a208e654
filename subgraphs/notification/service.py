"""Notification use cases: reacting to events (one transaction per stream read, each event applied
once, deduplicated by event id) and what a user can do with their inbox and preferences. Every read
and write is scoped to the caller's organization AND user."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import String, and_, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import transaction
from shared.errors import InputError, UserError
from shared.events import Event, utcnow
from shared.members import MEMBERSHIP_EVENTS, apply_membership_event
from shared.runtime import Runtime
from shared.tokens import Principal
from subgraphs.notification import decisions as d
from subgraphs.notification.models import (
    EmailMessage, Notification, OrganizationDefault, OrganizationSettings, Preference, ProcessedEvent, Recipient, members,
)

CONSUMER = "notification"
# Events that tell us who a user is (all carry user_id, email, full_name, locale).
_RECIPIENT_EVENTS = {"auth.user_registered", "auth.profile_updated", "auth.email_verification_requested"}


# --- reacting to events ---------------------------------------------------------------------------

@dataclass
class Handled:
    notifications: list[Notification] = field(default_factory=list)  # newly created, to push live
    email_ids: list[uuid.UUID] = field(default_factory=list)  # newly queued, to hand to the mailer


def concerns(event_type: str) -> bool:
    """Whether events of this type change anything here (most do not: no rows, not even the dedupe one)."""
    return event_type in _RECIPIENT_EVENTS or event_type in MEMBERSHIP_EVENTS or d.has_audience(event_type)


async def handle_event(rt: Runtime, event: Event) -> Handled:
    """Apply one event exactly once: the dedupe row and every effect commit together, so a
    redelivered event (relay crash, consumer crash before XACK) changes nothing."""
    return await handle_events(rt, [event])


async def handle_events(rt: Runtime, events: Sequence[Event]) -> Handled:
    """Apply a stream read's events in ONE transaction, each exactly once, with the same outcome as
    applying them one after the other: the dedupe rows and every effect commit together.

    Events that project nothing here and whose audience needs no roles (every stamp) are applied in
    bulk: one statement writes their dedupe rows and reads the facts of all of them; the others
    (recipient and membership projections, role-routed events) one by one, in stream order, so an
    event sees what the events before it projected. The notifications and e-mails of the whole
    batch are then two multi-row inserts (several invoice status mails to one recipient: one
    digest). Raises on any failure (nothing is applied): the consumer
    then applies the batch's entries one by one, so one poison event fails alone."""
    async with transaction(rt.sessionmaker) as s:
        decided: list[tuple[Event, d.Decision]] = []
        run: list[Event] = []  # consecutive bulk events, applied before the next projecting one
        seen: set[uuid.UUID] = set()
        for event in events:
            if event.id in seen or not concerns(event.type):
                continue
            seen.add(event.id)
            if _facts_known_upfront(event):
                run.append(event)
                continue
            decided += await _apply_bulk(s, run)
            run = []
            facts = await _apply_projecting(s, event)
            if facts is not None:
                decided.append((event, d.decide(event, facts)))
        decided += await _apply_bulk(s, run)
        return await _store(s, decided)


async def _apply_projecting(s: AsyncSession, event: Event) -> d.Facts | None:
    """Dedupe and project one event; its facts when it has an audience and was not applied yet."""
    if (await s.execute(
        pg_insert(ProcessedEvent).values(consumer=CONSUMER, event_id=event.id, event_type=event.type)
        .on_conflict_do_nothing().returning(ProcessedEvent.event_id)
    )).first() is None:
        return None  # already applied
    if event.type in _RECIPIENT_EVENTS:
        await _project_recipient(s, event)
    await apply_membership_event(s, members, event)
    if not d.has_audience(event.type):
        return None  # e.g. a profile update: only the projection above
    roles: dict[uuid.UUID, str] = {}
    if event.type in d.ROLE_ROUTED and event.organization_id is not None:
        rows = await s.execute(select(members.c.user_id, members.c.role).where(
            members.c.organization_id == event.organization_id, members.c.role.is_not(None)))
        roles = {u: r for u, r in rows}
    (_, facts), = await _read_facts(s, [event], {event.id: d.users_concerned(event, roles)}, roles, dedupe=False)
    return facts


async def _project_recipient(s: AsyncSession, event: Event) -> None:
    p = event.typed_payload()
    values = {"user_id": p.user_id, "email": p.email, "full_name": p.full_name, "locale": d.normalize_locale(p.locale),
              "updated_at": event.occurred_at}
    stmt = pg_insert(Recipient).values(**values)
    # Events may arrive out of order across aggregates' retries: never let older data win.
    await s.execute(stmt.on_conflict_do_update(
        index_elements=[Recipient.user_id],
        set_={k: stmt.excluded[k] for k in ("email", "full_name", "locale", "updated_at")},
        where=Recipient.updated_at <= stmt.excluded.updated_at,
    ))


def _facts_known_upfront(event: Event) -> bool:
    """Whether the facts can be read before the event is applied: it projects nothing here (the
    facts would not change by applying it) and its audience does not depend on the members' roles
    (then `users_concerned` needs no read)."""
    return (d.has_audience(event.type) and event.organization_id is not None and event.type not in d.ROLE_ROUTED
            and event.type not in _RECIPIENT_EVENTS and event.type not in MEMBERSHIP_EVENTS)


async def _apply_bulk(s: AsyncSession, events: list[Event]) -> list[tuple[Event, d.Decision]]:
    """The dedupe rows and the facts of events known upfront in one statement (one round trip for
    the whole run, however long); the decisions of those applied for the first time."""
    if not events:
        return []
    found = await _read_facts(s, events, {e.id: d.users_concerned(e, {}) for e in events}, {}, dedupe=True)
    return [(event, d.decide(event, facts)) for event, facts in found]


def _json_rows(table, *columns, where):
    return (select(func.coalesce(func.json_agg(func.json_build_array(*columns)), text("'[]'::json")))
            .select_from(table).where(*where).scalar_subquery())


@functools.cache
def _facts_statement(dedupe: bool):
    """What the decisions on a set of events read (recipients, their preferences, the organizations'
    defaults and settings) in one statement, after the dedupe rows' insert when `dedupe`. Built
    once per shape (bound: orgs, users, and p_consumer, p_event_ids, p_event_types): constructing
    it per event cost about as much as running it. Preferences come for every (organization,
    user) pair of the sets; each event's facts keep only its own."""
    from sqlalchemy.dialects.postgresql import ARRAY, UUID

    users = bindparam("users", type_=ARRAY(UUID(as_uuid=True)))
    orgs = bindparam("orgs", type_=ARRAY(UUID(as_uuid=True)))
    r, p, o, st = Recipient.__table__, Preference.__table__, OrganizationDefault.__table__, OrganizationSettings.__table__
    columns = [
        _json_rows(r, r.c.user_id, r.c.email, r.c.full_name, r.c.locale, where=[r.c.user_id == func.any(users)]),
        _json_rows(p, p.c.organization_id, p.c.user_id, p.c.category, p.c.channel, p.c.enabled,
                   where=[p.c.organization_id == func.any(orgs), p.c.user_id == func.any(users)]),
        _json_rows(o, o.c.organization_id, o.c.category, o.c.channel, o.c.enabled,
                   where=[o.c.organization_id == func.any(orgs)]),
        _json_rows(st, st.c.organization_id, st.c.send_cfdi_to_customer, where=[st.c.organization_id == func.any(orgs)]),
    ]
    if dedupe:
        given = func.unnest(bindparam("p_event_ids", type_=ARRAY(UUID(as_uuid=True))),
                            bindparam("p_event_types", type_=ARRAY(String))).table_valued("event_id", "event_type").render_derived()
        first = (pg_insert(ProcessedEvent).from_select(
            ["consumer", "event_id", "event_type"],
            select(bindparam("p_consumer", type_=String), given.c.event_id, given.c.event_type))
            .on_conflict_do_nothing().returning(ProcessedEvent.event_id).cte("first_time"))
        columns.insert(0, select(func.coalesce(func.json_agg(first.c.event_id), text("'[]'::json")))
                       .select_from(first).scalar_subquery())
    return select(*columns)


async def _read_facts(s: AsyncSession, events: Sequence[Event], users: dict[uuid.UUID, list[uuid.UUID]],
                      roles: dict[uuid.UUID, str], *, dedupe: bool) -> list[tuple[Event, d.Facts]]:
    """(event, facts) for the events applied for the first time (all of them without `dedupe`:
    the caller has written the dedupe rows itself)."""
    orgs = sorted({e.organization_id for e in events if e.organization_id is not None}, key=str)
    params = {"orgs": orgs, "users": sorted({u for us in users.values() for u in us}, key=str)}
    if dedupe:
        params.update(p_consumer=CONSUMER, p_event_ids=[e.id for e in events], p_event_types=[e.type for e in events])
    row = tuple((await s.execute(_facts_statement(dedupe), params)).one())
    if dedupe:
        first = {uuid.UUID(i) for i in _decoded(row[0])}
        events, row = [e for e in events if e.id in first], row[1:]
    recipients, prefs, defaults, send_cfdi = (_decoded(v) for v in row)
    recipients = {uuid.UUID(u): d.RecipientInfo(uuid.UUID(u), e, n, loc) for u, e, n, loc in recipients}
    send_cfdi = {uuid.UUID(org): bool(on) for org, on in send_cfdi}
    by_org: dict[uuid.UUID, tuple[dict, dict]] = {org: ({}, {}) for org in orgs}
    for org, u, c, ch, en in prefs:
        by_org[uuid.UUID(org)][0][(uuid.UUID(u), c, ch)] = en
    for org, c, ch, en in defaults:
        by_org[uuid.UUID(org)][1][(c, ch)] = en
    out = []
    for e in events:
        mine = users[e.id]
        user_prefs, org_defaults = by_org.get(e.organization_id, ({}, {}))
        out.append((e, d.Facts(
            recipients={u: recipients[u] for u in mine if u in recipients},
            preferences=d.Preferences({k: v for k, v in user_prefs.items() if k[0] in mine}, org_defaults),
            send_cfdi_to_customer=send_cfdi.get(e.organization_id, False), roles=roles)))
    return out


def _decoded(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


_NEW_NOTIFICATIONS = """
INSERT INTO notification.notifications (id, organization_id, user_id, event_id, type, title, body, data)
SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:orgs AS uuid[]), CAST(:users AS uuid[]), CAST(:events AS uuid[]),
                     CAST(:types AS text[]), CAST(:titles AS text[]), CAST(:bodies AS text[]),
                     CAST(CAST(:data AS text[]) AS jsonb[]))
ON CONFLICT DO NOTHING
RETURNING id, organization_id, user_id, type, title, body, data, created_at"""

_NEW_EMAILS = """
INSERT INTO notification.email_messages (id, idempotency_key, event_id, event_ids, organization_id, user_id, to_address,
                                         locale, template, context, attachments)
SELECT id, key, event_id, CAST(string_to_array(covered, ' ') AS uuid[]), org, user_id, address, locale, template,
       context, attachments
FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:events AS uuid[]), CAST(:covered AS text[]),
            CAST(:orgs AS uuid[]), CAST(:users AS uuid[]), CAST(:addresses AS text[]), CAST(:locales AS text[]),
            CAST(:templates AS text[]), CAST(CAST(:contexts AS text[]) AS jsonb[]),
            CAST(CAST(:attachments AS text[]) AS jsonb[]))
     AS m(id, key, event_id, covered, org, user_id, address, locale, template, context, attachments)
ON CONFLICT DO NOTHING
RETURNING id"""


async def _store(s: AsyncSession, decided: list[tuple[Event, d.Decision]]) -> Handled:
    """Every notification and e-mail of the decisions: one multi-row insert each (one statement
    whatever the number of events; the unique keys make a redelivery add nothing). Status mails to
    one recipient become a digest here (`d.outgoing`), in this transaction, keyed by the events it
    covers; in-app notices stay one per event."""
    out = Handled()
    notices = [(e, n) for e, decision in decided for n in decision.in_app]
    if notices:
        rows = await s.execute(text(_NEW_NOTIFICATIONS), {
            "ids": [uuid.uuid4() for _ in notices], "orgs": [e.organization_id for e, _ in notices],
            "users": [n.user_id for _, n in notices], "events": [e.id for e, _ in notices],
            "types": [n.type for _, n in notices], "titles": [n.title for _, n in notices],
            "bodies": [n.body for _, n in notices], "data": [json.dumps(n.data) for _, n in notices]})
        out.notifications = [_Inserted(r._mapping) for r in rows]
    mails = d.outgoing([(e, i) for e, decision in decided for i in decision.emails])
    if mails:
        intents = [m.intent for m in mails]
        rows = await s.execute(text(_NEW_EMAILS), {
            "ids": [uuid.uuid4() for _ in mails], "keys": [m.idempotency_key for m in mails],
            "events": [m.events[0].id for m in mails], "covered": [" ".join(str(e.id) for e in m.events) for m in mails],
            "orgs": [m.events[0].organization_id for m in mails],
            "users": [i.user_id for i in intents], "addresses": [i.to_address for i in intents],
            "locales": [i.locale for i in intents], "templates": [i.template for i in intents],
            "contexts": [json.dumps(i.context) for i in intents],
            "attachments": [json.dumps([{"path": a.path, "filename": a.filename, "content_type": a.content_type}
                                        for a in i.attachments]) for i in intents]})
        out.email_ids = [r[0] for r in rows]
    return out


class _Inserted:
    """A notification row just inserted, as RETURNING gave it (what `live_message` reads)."""

    def __init__(self, mapping) -> None:
        self.__dict__.update(mapping)
        if isinstance(self.data, (str, bytes)):
            self.data = json.loads(self.data)


async def _preferences(s: AsyncSession, organization_id: uuid.UUID, user_ids: Sequence[uuid.UUID]) -> d.Preferences:
    """The users' own choices and the organization's defaults (the rules live in decisions)."""
    user_prefs = {}
    if user_ids:
        rows = (await s.execute(select(Preference).where(
            Preference.organization_id == organization_id, Preference.user_id.in_(user_ids)))).scalars()
        user_prefs = {(r.user_id, r.category, r.channel): r.enabled for r in rows}
    defaults = (await s.execute(select(OrganizationDefault).where(
        OrganizationDefault.organization_id == organization_id))).scalars()
    return d.Preferences(user_prefs, {(r.category, r.channel): r.enabled for r in defaults})


async def _send_cfdi(s: AsyncSession, organization_id: uuid.UUID) -> bool:
    return bool((await s.execute(select(OrganizationSettings.send_cfdi_to_customer).where(
        OrganizationSettings.organization_id == organization_id))).scalar())


def live_message(n: Notification) -> dict:
    """What `notificationReceived` subscribers get (published after the commit)."""
    return {"id": str(n.id), "organizationId": str(n.organization_id), "userId": str(n.user_id), "type": n.type,
            "title": n.title, "body": n.body, "data": n.data, "createdAt": n.created_at.isoformat(),
            "readAt": None, "archivedAt": None}


# --- inbox ----------------------------------------------------------------------------------------

def _mine(p: Principal):
    return and_(Notification.organization_id == p.organization_id, Notification.user_id == p.user_id)


async def inbox(session: AsyncSession, p: Principal, *, after: list | None, limit: int,
                unread_only: bool = False) -> list[Notification]:
    """Newest first, keyset on (created_at, id); archived notifications are out of the inbox."""
    stmt = select(Notification).where(_mine(p), Notification.archived_at.is_(None))
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    if after:
        at, last_id = after  # typed by decode_cursor
        stmt = stmt.where(or_(Notification.created_at < at, and_(Notification.created_at == at, Notification.id < last_id)))
    stmt = stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def unread_counts(session: AsyncSession, organization_id: uuid.UUID, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = (await session.execute(
        select(Notification.user_id, func.count()).where(
            Notification.organization_id == organization_id, Notification.user_id.in_(user_ids),
            Notification.read_at.is_(None), Notification.archived_at.is_(None),
        ).group_by(Notification.user_id)
    )).all()
    found = {u: n for u, n in rows}
    return {u: found.get(u, 0) for u in user_ids}


def _ids(values: Sequence[str], field_name: str) -> list[uuid.UUID]:
    out, errors = [], []
    for i, v in enumerate(values):
        try:
            out.append(uuid.UUID(str(v)))
        except ValueError:
            errors.append(UserError(field=[field_name, str(i)], code="INVALID_ID", message="Identificador no válido."))
    if errors:
        raise InputError(errors)
    return out


async def mark_read(rt: Runtime, p: Principal, ids: Sequence[str]) -> int:
    """Mark the caller's notifications read; ids of other users or organizations are simply not
    matched (the answer never tells whether they exist)."""
    wanted = _ids(ids, "ids")
    if not wanted:
        return 0
    async with transaction(rt.sessionmaker) as s:
        result = await s.execute(
            update(Notification).where(_mine(p), Notification.id.in_(wanted), Notification.read_at.is_(None))
            .values(read_at=func.now())
        )
        return result.rowcount or 0


async def mark_all_read(rt: Runtime, p: Principal) -> int:
    async with transaction(rt.sessionmaker) as s:
        result = await s.execute(
            update(Notification).where(_mine(p), Notification.read_at.is_(None), Notification.archived_at.is_(None))
            .values(read_at=func.now())
        )
        return result.rowcount or 0


async def archive(rt: Runtime, p: Principal, notification_id: str) -> Notification:
    (nid,) = _ids([notification_id], "id")
    async with transaction(rt.sessionmaker) as s:
        row = (await s.execute(select(Notification).where(_mine(p), Notification.id == nid).with_for_update())).scalar_one_or_none()
        if row is None:
            raise InputError.single("NOT_FOUND", "La notificación no existe.", ["id"])
        if row.archived_at is None:
            row.archived_at = utcnow()
            # Archiving also clears it from the unread count.
            row.read_at = row.read_at or row.archived_at
        return row


# --- preferences ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EffectivePreference:
    category: str
    channel: str
    enabled: bool
    locked: bool


def _check_pair(category: str, channel: str, enabled: bool, path: list[str]) -> None:
    if category not in d.CATEGORIES:
        raise InputError.single("INVALID_CATEGORY", f"Categoría desconocida: {category}.", path + ["category"])
    if channel not in d.CHANNELS:
        raise InputError.single("INVALID_CHANNEL", f"Canal desconocido: {channel}.", path + ["channel"])
    if d.is_locked(category) and not enabled:
        raise InputError.single(
            "PREFERENCE_LOCKED",
            "Los avisos de seguridad (restablecer contraseña, verificación, cambios de MFA) no se pueden desactivar.",
            path + ["enabled"],
        )


def _grid(prefs: d.Preferences, user_id: uuid.UUID | None) -> list[EffectivePreference]:
    """Every category × channel as `prefs` decides it for `user_id` (None: the organization default)."""
    return [EffectivePreference(c, ch, prefs.allows(user_id, c, ch), d.is_locked(c))
            for c in d.CATEGORIES for ch in d.CHANNELS]


async def effective_preferences(session: AsyncSession, organization_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
                                ) -> dict[uuid.UUID, list[EffectivePreference]]:
    prefs = await _preferences(session, organization_id, user_ids)
    return {u: _grid(prefs, u) for u in user_ids}


async def update_preference(rt: Runtime, p: Principal, *, category: str, channel: str, enabled: bool) -> EffectivePreference:
    _check_pair(category, channel, enabled, [])
    async with transaction(rt.sessionmaker) as s:
        stmt = pg_insert(Preference).values(id=uuid.uuid4(), user_id=p.user_id, organization_id=p.organization_id,
                                            category=category, channel=channel, enabled=enabled)
        await s.execute(stmt.on_conflict_do_update(
            index_elements=[Preference.user_id, Preference.organization_id, Preference.category, Preference.channel],
            set_={"enabled": stmt.excluded.enabled, "updated_at": func.now()},
        ))
    return EffectivePreference(category, channel, enabled, d.is_locked(category))


@dataclass(frozen=True)
class OrgSettings:
    send_cfdi_to_customer: bool
    defaults: list[EffectivePreference]


async def organization_settings(session: AsyncSession, organization_id: uuid.UUID) -> OrgSettings:
    return OrgSettings(await _send_cfdi(session, organization_id), _grid(await _preferences(session, organization_id, []), None))


async def update_organization_settings(rt: Runtime, p: Principal, *, send_cfdi_to_customer: bool | None,
                                       defaults: Sequence[tuple[str, str, bool]] | None) -> OrgSettings:
    for i, (category, channel, enabled) in enumerate(defaults or ()):
        _check_pair(category, channel, enabled, ["defaults", str(i)])
    async with transaction(rt.sessionmaker) as s:
        if send_cfdi_to_customer is not None:
            stmt = pg_insert(OrganizationSettings).values(organization_id=p.organization_id,
                                                          send_cfdi_to_customer=send_cfdi_to_customer)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=[OrganizationSettings.organization_id],
                set_={"send_cfdi_to_customer": stmt.excluded.send_cfdi_to_customer, "updated_at": func.now()},
            ))
        for category, channel, enabled in defaults or ():
            stmt = pg_insert(OrganizationDefault).values(organization_id=p.organization_id, category=category,
                                                         channel=channel, enabled=enabled)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=[OrganizationDefault.organization_id, OrganizationDefault.category, OrganizationDefault.channel],
                set_={"enabled": stmt.excluded.enabled},
            ))
        await s.flush()
        return await organization_settings(s, p.organization_id)
