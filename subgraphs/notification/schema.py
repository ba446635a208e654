"""The notification subgraph's GraphQL schema. Thin: each resolver checks who is asking and calls one
service function. Everything is the caller's own: filtered by their organization AND user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from shared.bus import user_channel
from shared.context import RequestContext
from shared.errors import Payload, payload_or_errors
from shared.graphql import build_schema
from shared.pagination import Connection, build_connection, decode_cursor, page_size
from shared.permissions import Permission
from subgraphs.notification import loaders, service
from subgraphs.notification import models as m

Ctx = Info[RequestContext, None]


@strawberry.enum(description="What a notification is about; preferences are set per category.")
class NotificationCategory(Enum):
    ACCOUNT = "account"
    SECURITY = "security"
    INVOICING = "invoicing"
    EXPENSES = "expenses"
    GENERAL = "general"


@strawberry.enum(description="How a notification reaches you.")
class NotificationChannel(Enum):
    EMAIL = "email"
    IN_APP = "in_app"


@strawberry.type(description="An entry of your in-app inbox.")
class Notification:
    id: strawberry.ID
    type: str = strawberry.field(description="The event it comes from, e.g. invoice.stamped.")
    title: str
    body: str
    data: JSON = strawberry.field(description="Structured details (invoiceId, uuid, …) for links in the UI.")
    read_at: datetime | None
    archived_at: datetime | None
    created_at: datetime

    @strawberry.field
    def read(self) -> bool:
        return self.read_at is not None

    @classmethod
    def from_row(cls, n: m.Notification) -> "Notification":
        return cls(id=strawberry.ID(str(n.id)), type=n.type, title=n.title, body=n.body, data=n.data or {},
                   read_at=n.read_at, archived_at=n.archived_at, created_at=n.created_at)

    @classmethod
    def from_message(cls, msg: dict) -> "Notification":
        return cls(id=strawberry.ID(msg["id"]), type=msg["type"], title=msg["title"], body=msg["body"],
                   data=msg.get("data") or {}, read_at=None, archived_at=None,
                   created_at=datetime.fromisoformat(msg["createdAt"]))


@strawberry.type
class NotificationPreference:
    category: NotificationCategory
    channel: NotificationChannel
    enabled: bool
    locked: bool = strawberry.field(description="Security notices are always sent and cannot be turned off.")

    @classmethod
    def from_value(cls, p: service.EffectivePreference) -> "NotificationPreference":
        return cls(category=NotificationCategory(p.category), channel=NotificationChannel(p.channel),
                   enabled=p.enabled, locked=p.locked)


@strawberry.type
class OrganizationNotificationSettings:
    send_cfdi_to_customer: bool = strawberry.field(
        description="E-mail the stamped CFDI (XML and PDF) to the customer's address automatically.")
    defaults: list[NotificationPreference] = strawberry.field(
        description="What members get for each category and channel unless they choose otherwise.")

    @classmethod
    def from_value(cls, s: service.OrgSettings) -> "OrganizationNotificationSettings":
        return cls(send_cfdi_to_customer=s.send_cfdi_to_customer,
                   defaults=[NotificationPreference.from_value(p) for p in s.defaults])


@strawberry.federation.type(keys=["id"], description="A person who can sign in.")
class User:
    id: strawberry.ID

    @classmethod
    async def resolve_reference(cls, info: Ctx, id: strawberry.ID) -> "User":
        # A stub for anybody; its fields answer only for the caller (another user's inbox and
        # preferences are nobody else's business).
        return cls(id=id)

    async def _mine(self, info: Ctx):
        p = await info.context.principal()
        return p if str(p.user_id) == str(self.id) else None

    @strawberry.field(description="Your notification preferences (empty for anybody but yourself).")
    async def notification_preferences(self, info: Ctx) -> list[NotificationPreference] | None:
        p = await self._mine(info)
        if p is None:
            return []
        prefs = await loaders.preferences(info.context, p.organization_id).load(p.user_id)
        return [NotificationPreference.from_value(x) for x in prefs]

    @strawberry.field(description="Your unread notifications in the current organization (null for anybody but yourself).")
    async def unread_notification_count(self, info: Ctx) -> int | None:
        p = await self._mine(info)
        if p is None:
            return None
        return await loaders.unread_counts(info.context, p.organization_id).load(p.user_id)


# --- payloads -------------------------------------------------------------------------------------

@strawberry.type
class MarkNotificationsReadPayload(Payload):
    updated_count: int = 0
    unread_count: int | None = None


@strawberry.type
class ArchiveNotificationPayload(Payload):
    notification: Notification | None = None


@strawberry.type
class UpdateNotificationPreferencePayload(Payload):
    preference: NotificationPreference | None = None


@strawberry.type
class UpdateOrganizationNotificationSettingsPayload(Payload):
    settings: OrganizationNotificationSettings | None = None


@strawberry.input
class NotificationDefaultInput:
    category: NotificationCategory
    channel: NotificationChannel
    enabled: bool


async def _unread(info: Ctx) -> int:
    p = await info.context.principal()
    return await loaders.unread_counts(info.context, p.organization_id).load(p.user_id)


@strawberry.type
class Query:
    @strawberry.field(description="Your inbox in the current organization, newest first (archived ones left out).")
    async def notifications(self, info: Ctx, first: int | None = None, after: str | None = None,
                            unread_only: bool = False) -> Connection[Notification] | None:
        p = await info.context.principal()
        size, cursor = page_size(first), decode_cursor(after, datetime.fromisoformat, uuid.UUID)
        async with info.context.runtime.sessionmaker() as session:
            rows = await service.inbox(session, p, after=cursor, limit=size + 1, unread_only=unread_only)
        return build_connection(rows, size, to_node=Notification.from_row,
                                key_of=lambda r: [r.created_at.isoformat(), str(r.id)], after=after)

    @strawberry.field(description="How many of your notifications in the current organization are unread.")
    async def unread_count(self, info: Ctx) -> int | None:
        return await _unread(info)

    @strawberry.field(description="Your effective preferences per category and channel.")
    async def notification_preferences(self, info: Ctx) -> list[NotificationPreference] | None:
        p = await info.context.principal()
        prefs = await loaders.preferences(info.context, p.organization_id).load(p.user_id)
        return [NotificationPreference.from_value(x) for x in prefs]

    @strawberry.field(description="The organization's notification settings and member defaults.")
    async def organization_notification_settings(self, info: Ctx) -> OrganizationNotificationSettings | None:
        p = await info.context.principal()
        async with info.context.runtime.sessionmaker() as session:
            return OrganizationNotificationSettings.from_value(await service.organization_settings(session, p.organization_id))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Mark some of your notifications read (unknown ids are ignored).")
    async def mark_notifications_read(self, info: Ctx, ids: list[strawberry.ID]) -> MarkNotificationsReadPayload:
        p = await info.context.principal()

        async def run():
            n = await service.mark_read(info.context.runtime, p, [str(i) for i in ids])
            return MarkNotificationsReadPayload(updated_count=n, unread_count=await _unread(info))
        return await payload_or_errors(MarkNotificationsReadPayload, run)

    @strawberry.mutation(description="Mark every notification of your inbox read.")
    async def mark_all_notifications_read(self, info: Ctx) -> MarkNotificationsReadPayload:
        p = await info.context.principal()

        async def run():
            n = await service.mark_all_read(info.context.runtime, p)
            return MarkNotificationsReadPayload(updated_count=n, unread_count=0)
        return await payload_or_errors(MarkNotificationsReadPayload, run)

    @strawberry.mutation(description="Move a notification out of your inbox.")
    async def archive_notification(self, info: Ctx, id: strawberry.ID) -> ArchiveNotificationPayload:
        p = await info.context.principal()

        async def run():
            return ArchiveNotificationPayload(notification=Notification.from_row(await service.archive(info.context.runtime, p, str(id))))
        return await payload_or_errors(ArchiveNotificationPayload, run)

    @strawberry.mutation(description="Turn one category on or off for one channel (security cannot be turned off).")
    async def update_notification_preference(self, info: Ctx, category: NotificationCategory, channel: NotificationChannel,
                                             enabled: bool) -> UpdateNotificationPreferencePayload:
        p = await info.context.principal()

        async def run():
            pref = await service.update_preference(info.context.runtime, p, category=category.value, channel=channel.value,
                                                   enabled=enabled)
            return UpdateNotificationPreferencePayload(preference=NotificationPreference.from_value(pref))
        return await payload_or_errors(UpdateNotificationPreferencePayload, run)

    @strawberry.mutation(description="Organization-wide settings and member defaults (needs notification:manage).")
    async def update_organization_notification_settings(
        self, info: Ctx, send_cfdi_to_customer: bool | None = None, defaults: list[NotificationDefaultInput] | None = None,
    ) -> UpdateOrganizationNotificationSettingsPayload:
        p = await info.context.require(Permission.NOTIFICATION_MANAGE)

        async def run():
            s = await service.update_organization_settings(
                info.context.runtime, p, send_cfdi_to_customer=send_cfdi_to_customer,
                defaults=[(x.category.value, x.channel.value, x.enabled) for x in defaults] if defaults is not None else None,
            )
            return UpdateOrganizationNotificationSettingsPayload(settings=OrganizationNotificationSettings.from_value(s))
        return await payload_or_errors(UpdateOrganizationNotificationSettingsPayload, run)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="New in-app notifications for you in the current organization, as they arrive.")
    async def notification_received(self, info: Ctx) -> AsyncGenerator[Notification, None]:
        p = await info.context.principal()
        org = str(p.organization_id)
        # Through the process's one pub/sub connection (shared/pubsub.py).
        async for msg in info.context.runtime.live.stream(user_channel(p.user_id), p):
            if msg.data.get("organizationId") == org:  # the same person's inbox in another organization stays there
                yield msg.shared(Notification, Notification.from_message)


schema = build_schema(query=Query, mutation=Mutation, subscription=Subscription, types=[User])


