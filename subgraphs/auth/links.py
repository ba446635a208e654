"""The single-use links mailed to people (finish sign-up, verify an address, reset a password,
accept an invitation), minted only when the e-mail is sent.

Rows and events name a link; `mail_link` creates its token at send time for the notification worker
(through the signed internal endpoint, `subgraphs/auth/internal.py`) and keeps only the hash, so no
table, event or stream holds a working link and only the newest e-mail's link works.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from shared.crypto import hash_token, new_token
from shared.db import transaction
from shared.runtime import Runtime
from subgraphs.auth import security
from subgraphs.auth.models import EmailToken, Invitation, SignUp, User

PASSWORD_RESET_TTL = timedelta(hours=1)  # the link in the mail says so


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def unusable_hash() -> str:
    """A token hash nobody holds the token for: a link row is inert until `mail_link` mints."""
    return hash_token(new_token())


LINK_KINDS = ("sign_up", "verify_email", "reset_password", "invitation")
_LINK_PATHS = {"sign_up": "completar-registro", "verify_email": "verificar-correo", "reset_password": "restablecer-contrasena",
               "invitation": "invitacion"}


@dataclass
class MailLink:
    url: str | None
    context: dict  # template values only auth knows at send time (e.g. the account holder's name)
    locale: str | None = None
    template: str | None = None  # another e-mail than the one queued (an address that already has an account)


async def mail_link(rt: Runtime, kind: str, ref: uuid.UUID, email: str) -> MailLink | None:
    """Mint the single-use link for one e-mail about to be sent (the notification worker asks,
    through the signed internal endpoint). Only the token's hash is kept; minting again replaces
    it, so at most the newest e-mail's link works. None: nothing to send (no such account,
    already used, expired, revoked)."""
    email = security.normalize_email(email)
    token = new_token("inv_" if kind == "invitation" else "")
    async with transaction(rt.sessionmaker) as session:
        if kind == "invitation":
            inv = (await session.execute(select(Invitation).where(Invitation.id == ref).with_for_update())).scalar_one_or_none()
            if inv is None or inv.email != email or inv.accepted_at or inv.revoked_at or inv.expires_at < utcnow():
                return None
            inv.token_hash, context, locale = hash_token(token), {}, None
        elif kind == "reset_password":
            user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
            if user is None:
                return None
            row = (await session.execute(select(EmailToken).where(EmailToken.id == ref).with_for_update())).scalar_one_or_none()
            if row is None:  # first send of this request: its token row is keyed by the request id
                row = EmailToken(id=ref, user_id=user.id, purpose=kind, token_hash="", expires_at=utcnow() + PASSWORD_RESET_TTL)
                session.add(row)
            elif row.user_id != user.id or row.purpose != kind or row.used_at or row.expires_at < utcnow():
                return None
            row.token_hash, context, locale = hash_token(token), {"full_name": user.full_name}, user.locale
        elif kind == "sign_up":
            row = (await session.execute(select(SignUp).where(SignUp.id == ref).with_for_update())).scalar_one_or_none()
            if row is None or row.email != email or row.completed_at or row.expires_at < utcnow():
                return None
            holder = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
            if holder is not None:  # the address has an account: tell its owner, send no link
                return MailLink(None, {"full_name": holder.full_name}, holder.locale, template="sign_up_existing")
            row.token_hash, context, locale = hash_token(token), {}, None
        elif kind == "verify_email":
            row = (await session.execute(select(EmailToken).where(EmailToken.id == ref, EmailToken.purpose == kind)
                                         .with_for_update())).scalar_one_or_none()
            user = await session.get(User, row.user_id) if row is not None else None
            if user is None or user.email != email or user.email_verified_at or row.used_at or row.expires_at < utcnow():
                return None
            row.token_hash, context, locale = hash_token(token), {}, None
        else:
            return None
    return MailLink(f"{rt.settings.app_base_url}/{_LINK_PATHS[kind]}?token={token}", context, locale)
