from __future__ import annotations

from sqlalchemy import select

from tests.auth.conftest import LOG_IN, PASSWORD, SIGN_UP
from tests.conftest import unique_email

ME = "{ me { id email fullName mfaEnabled organization { id name } memberships { role } } }"


async def test_sign_up_returns_tokens_and_makes_an_owner(gql, sign_up):
    acct = await sign_up(org="Tacos El Güero SA de CV")
    me = (await gql.ok(ME, token=acct.token))["me"]
    assert me["email"] == acct.email
    assert me["organization"] == {"id": acct.org_id, "name": "Tacos El Güero SA de CV"}
    assert me["memberships"] == [{"role": "OWNER"}]


async def test_sign_up_refuses_bad_input_with_field_paths_and_writes_nothing(gql, auth_http):
    email = unique_email()
    r = await gql.ok(SIGN_UP, {"input": {"email": "no-es-correo", "password": "corta", "fullName": " ", "organizationName": ""}})
    errors = {e["code"]: e["field"] for e in r["signUp"]["userErrors"]}
    assert errors == {"INVALID_EMAIL": ["input", "email"], "WEAK_PASSWORD": ["input", "password"],
                      "REQUIRED": ["input", "organizationName"]} or set(errors) >= {"INVALID_EMAIL", "WEAK_PASSWORD", "REQUIRED"}
    assert r["signUp"]["tokens"] is None
    # Nothing was written: the e-mail is still free.
    ok = await gql.ok(SIGN_UP, {"input": {"email": email, "password": PASSWORD, "fullName": "X", "organizationName": "Y"}})
    assert ok["signUp"]["userErrors"] == []


async def test_duplicate_email_is_a_typed_error(gql, sign_up):
    acct = await sign_up()
    r = await gql.ok(SIGN_UP, {"input": {"email": acct.email.upper(), "password": PASSWORD, "fullName": "X", "organizationName": "Y"}})
    assert [e["code"] for e in r["signUp"]["userErrors"]] == ["EMAIL_TAKEN"]


async def test_sign_up_writes_user_registered_event_in_same_transaction(gql, sign_up, auth_settings):
    from shared.db import make_engine, make_sessionmaker
    from subgraphs.auth.models import User, outbox

    acct = await sign_up()
    engine = make_engine(auth_settings.database_url, pool_size=1)
    async with make_sessionmaker(engine)() as s:
        user_id = (await s.execute(select(User.id).where(User.email == acct.email))).scalar_one()
        rows = (await s.execute(select(outbox.c.type, outbox.c.payload).where(outbox.c.aggregate_id == str(user_id))
                                .order_by(outbox.c.id))).all()
    await engine.dispose()
    # The founder joins as OWNER: services projecting roles (expense, notification) learn it here.
    assert [r.type for r in rows] == ["auth.user_registered", "auth.member_joined"]
    assert rows[1].payload == {"user_id": str(user_id), "role": "OWNER"}
    assert rows[0].payload["verification_url"].startswith("http")


async def test_log_in_with_right_and_wrong_password(gql, sign_up):
    acct = await sign_up()
    good = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]
    assert good["tokens"]["accessToken"] and good["mfaRequired"] is None
    bad = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": "equivocada-123"}}))["logIn"]
    assert bad["tokens"] is None
    assert [e["code"] for e in bad["userErrors"]] == ["INVALID_CREDENTIALS"]


async def test_unknown_email_and_wrong_password_look_the_same(gql, sign_up):
    acct = await sign_up()
    wrong = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": "equivocada-123"}}))["logIn"]["userErrors"]
    unknown = (await gql.ok(LOG_IN, {"input": {"email": unique_email(), "password": "equivocada-123"}}))["logIn"]["userErrors"]
    assert wrong == unknown


async def test_account_locks_after_repeated_failures_even_for_the_right_password(gql, sign_up, auth_settings):
    acct = await sign_up()
    for _ in range(auth_settings.login_max_failures_per_account):
        r = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": "equivocada-123"}}))["logIn"]
        assert r["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    locked = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]
    assert locked["tokens"] is None
    assert locked["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"
    assert "Intenta de nuevo" in locked["userErrors"][0]["message"]


async def test_one_ip_spraying_many_accounts_is_blocked(gql, auth_settings):
    for i in range(auth_settings.login_max_failures_per_ip):
        await gql.ok(LOG_IN, {"input": {"email": unique_email(f"spray{i}"), "password": "equivocada-123"}})
    r = (await gql.ok(LOG_IN, {"input": {"email": unique_email(), "password": "x" * 12}}))["logIn"]
    assert r["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"


async def test_me_requires_a_token(gql):
    r = await gql.execute(ME)
    assert r.error_codes == ["UNAUTHENTICATED"]


async def test_update_profile_and_validation(gql, sign_up):
    acct = await sign_up()
    q = "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { user { fullName locale } userErrors { field code } } }"
    ok = (await gql.ok(q, {"i": {"fullName": "Ana María López", "locale": "en"}}, token=acct.token))["updateProfile"]
    assert ok["user"] == {"fullName": "Ana María López", "locale": "en"}
    bad = (await gql.ok(q, {"i": {"locale": "fr"}}, token=acct.token))["updateProfile"]
    assert bad["userErrors"] == [{"field": ["input", "locale"], "code": "INVALID_LOCALE"}]
