"""Expired auth rows are purged (issue 7's follow-up): pending sign-ups keep a password hash and
e-mail tokens a link hash; an open sign-up form must not grow these tables forever."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from subgraphs.auth import service
from subgraphs.auth.models import EmailToken, RefreshToken, SignUp, User
from tests.auth.conftest import PASSWORD, SIGN_UP
from tests.conftest import unique_email


async def _pending_sign_up(gql, email: str) -> None:
    r = await gql.ok(SIGN_UP, {"input": {"email": email, "password": PASSWORD, "fullName": "X", "organizationName": "Y"}})
    assert r["signUp"]["success"]


async def test_purge_deletes_only_rows_expired_past_the_grace(gql, sign_up, auth_runtime):
    stale, fresh = unique_email("stale"), unique_email("fresh")
    await _pending_sign_up(gql, stale)
    await _pending_sign_up(gql, fresh)
    acct = await sign_up()
    now = datetime.now(timezone.utc)
    long_ago = now - service.PURGE_GRACE - timedelta(hours=1)
    just_expired = now - service.PURGE_GRACE + timedelta(hours=1)  # expired, but still in the grace
    async with auth_runtime.sessionmaker() as s, s.begin():
        await s.execute(update(SignUp).where(SignUp.email == stale).values(expires_at=long_ago))
        await s.execute(update(SignUp).where(SignUp.email == fresh).values(expires_at=just_expired))
        user_id = (await s.execute(select(User.id).where(User.email == acct.email))).scalar_one()
        s.add_all([
            EmailToken(user_id=user_id, purpose="reset_password", token_hash=f"old-{user_id}", expires_at=long_ago),
            EmailToken(user_id=user_id, purpose="reset_password", token_hash=f"new-{user_id}", expires_at=now + timedelta(hours=1)),
        ])
        await s.execute(update(RefreshToken).where(RefreshToken.user_id == user_id).values(expires_at=long_ago))

    counts = await service.purge_expired(auth_runtime)

    assert counts["sign_ups"] >= 1 and counts["email_tokens"] >= 1 and counts["refresh_tokens"] >= 1
    async with auth_runtime.sessionmaker() as s:
        emails = set((await s.execute(select(SignUp.email).where(SignUp.email.in_([stale, fresh])))).scalars())
        tokens = set((await s.execute(select(EmailToken.token_hash).where(EmailToken.user_id == user_id))).scalars())
        refresh = (await s.execute(select(RefreshToken.id).where(RefreshToken.user_id == user_id))).all()
    assert emails == {fresh}
    assert tokens == {f"new-{user_id}"}
    assert refresh == []


async def test_a_completed_sign_up_keeps_no_copy_of_the_password_hash(sign_up, auth_runtime):
    acct = await sign_up()
    async with auth_runtime.sessionmaker() as s:
        row = (await s.execute(select(SignUp).where(SignUp.email == acct.email))).scalar_one()
        user = (await s.execute(select(User).where(User.email == acct.email))).scalar_one()
    assert row.completed_at is not None and row.password_hash == ""
    assert user.password_hash.startswith("$argon2id$")


async def test_the_worker_runs_the_purge_every_hour():
    from workers import auth, main

    assert auth in main.MODULES
    (job,) = auth.CRON_JOBS
    assert job.coroutine is auth.purge_expired_auth_rows and job.minute == {17}
