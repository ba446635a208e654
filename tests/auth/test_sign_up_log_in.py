from __future__ import annotations

from sqlalchemy import select

from tests.auth.conftest import LOG_IN, PASSWORD, SIGN_UP
from tests.conftest import unique_email

ME = "{ me { id email fullName mfaEnabled emailVerified organization { id name } memberships { role } } }"


async def test_completed_sign_up_signs_in_a_verified_owner(gql, sign_up):
    acct = await sign_up(org="Tacos El Güero SA de CV")
    me = (await gql.ok(ME, token=acct.token))["me"]
    assert me["email"] == acct.email
    assert me["organization"] == {"id": acct.org_id, "name": "Tacos El Güero SA de CV"}
    assert me["memberships"] == [{"role": "OWNER"}]
    assert me["emailVerified"] is True  # opening the mailed link proved the address


async def test_sign_up_refuses_bad_input_with_field_paths_and_writes_nothing(gql, auth_http):
    email = unique_email()
    r = await gql.ok(SIGN_UP, {"input": {"email": "no-es-correo", "password": "corta", "fullName": " ", "organizationName": ""}})
    errors = {e["code"]: e["field"] for e in r["signUp"]["userErrors"]}
    assert errors == {"INVALID_EMAIL": ["input", "email"], "WEAK_PASSWORD": ["input", "password"],
                      "REQUIRED": ["input", "organizationName"]} or set(errors) >= {"INVALID_EMAIL", "WEAK_PASSWORD", "REQUIRED"}
    assert r["signUp"]["success"] is False
    # Nothing was written: the e-mail is still free.
    ok = await gql.ok(SIGN_UP, {"input": {"email": email, "password": PASSWORD, "fullName": "X", "organizationName": "Y"}})
    assert ok["signUp"]["userErrors"] == []


async def test_sign_up_does_not_tell_whether_an_address_has_an_account(gql, sign_up, auth_app, auth_http, mail_token):
    """Issue #7: `EMAIL_TAKEN` enumerated accounts. Now a taken and a free address get the same
    answer; the owner of the taken one is told by e-mail, and no link to a second account exists."""
    from tests.auth.conftest import mint_link

    acct = await sign_up()
    taken = await gql.ok(SIGN_UP, {"input": {"email": acct.email.upper(), "password": PASSWORD, "fullName": "X", "organizationName": "Y"}})
    free = await gql.ok(SIGN_UP, {"input": {"email": unique_email(), "password": PASSWORD, "fullName": "X", "organizationName": "Y"}})
    assert taken == free == {"signUp": {"success": True, "userErrors": []}}
    notice = await mint_link(auth_app, auth_http, "auth.sign_up_requested", acct.email)
    assert notice["template"] == "sign_up_existing" and notice["url"] is None
    # The password typed in the attempt opens nothing: the account keeps its own.
    r = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]
    assert r["tokens"]


async def test_a_sign_up_link_works_once_and_clears_other_pending_sign_ups(gql, sign_up, mail_token, auth_runtime):
    from subgraphs.auth.models import SignUp

    email = unique_email()
    for _ in range(2):  # two sign-ups for one free address: two links
        assert (await gql.ok(SIGN_UP, {"input": {"email": email, "password": PASSWORD, "fullName": "X", "organizationName": "Y"}}))["signUp"]["success"]
    from tests.auth.conftest import COMPLETE_SIGN_UP

    newest = await mail_token("auth.sign_up_requested", email)
    assert (await gql.ok(COMPLETE_SIGN_UP, {"t": newest}))["completeSignUp"]["tokens"]
    again = (await gql.ok(COMPLETE_SIGN_UP, {"t": newest}))["completeSignUp"]
    assert again["userErrors"][0]["code"] == "INVALID_TOKEN" and again["userErrors"][0]["field"] == ["token"]
    async with auth_runtime.sessionmaker() as s:  # the other pending sign-up (and its password hash) is gone
        left = (await s.execute(select(SignUp.completed_at).where(SignUp.email == email))).scalars().all()
    assert len(left) == 1 and left[0] is not None


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
    assert set(rows[0].payload) == {"user_id", "email", "full_name", "locale"}  # no link in events
    assert rows[1].payload == {"user_id": str(user_id), "role": "OWNER"}


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
