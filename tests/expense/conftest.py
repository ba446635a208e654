"""Expense tests: the real auth app (sign-up, invitations, tokens) and the expense app in-process,
against the run's Postgres. Membership events reach the expense projection the way the worker's
consumer delivers them: read from auth's outbox and applied with the same function."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from shared.db import transaction
from shared.events import Event
from shared.members import apply_membership_event
from tests.auth.conftest import Account, auth_app, auth_http, auth_runtime, auth_settings, gql, ip, mail_token, sign_up  # noqa: F401
from tests.auth.test_organizations import _join
from tests.conftest import in_process_jwks_runtime_factory, running_app
from tests.graphql_client import GraphQLClient


@pytest.fixture(scope="session")
def expense_app(settings, auth_http, tmp_path_factory):
    from subgraphs.expense.app import create_app

    settings = settings.model_copy(update={"receipts_dir": str(tmp_path_factory.mktemp("receipts")),
                                           "receipt_max_bytes": 1024 * 1024})
    return create_app(settings, runtime_factory=in_process_jwks_runtime_factory(auth_http))


@pytest.fixture(scope="session")
async def expense_http(expense_app):
    async with running_app(expense_app) as http:
        yield http


S3_BUCKET, S3_KEY_ID, S3_SECRET = "recibos-test", "test-key-id", "test-secret-never-logged"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP server on loopback (moto), with the receipts bucket made."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3_client(endpoint).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY_ID,
                        aws_secret_access_key=S3_SECRET)


def s3_settings(settings, endpoint: str, bucket: str = S3_BUCKET):
    return settings.model_copy(update={"receipts_store": "s3", "s3_endpoint_url": endpoint, "s3_bucket": bucket,
                                       "s3_access_key_id": S3_KEY_ID, "s3_secret_access_key": SecretStr(S3_SECRET),
                                       "receipts_dir": "/nonexistent/never-used", "receipt_max_bytes": 1024 * 1024})


@pytest.fixture(scope="session")
async def s3_expense_http(settings, auth_http, s3_endpoint):
    """A second expense app on the same database whose receipts live in the S3 server."""
    from subgraphs.expense.app import create_app

    app = create_app(s3_settings(settings, s3_endpoint), runtime_factory=in_process_jwks_runtime_factory(auth_http))
    async with running_app(app) as http:
        yield http


class ReceiptBackend:
    """The expense app serving one object-store backend, and an independent look at what it stored."""

    def __init__(self, name: str, http, read):
        self.name, self.http, self.read = name, http, read


@pytest.fixture(params=["local", "s3"])
def receipt_backend(request, expense_app, expense_http):
    if request.param == "local":
        root = Path(expense_app.state.runtime.settings.receipts_dir)
        return ReceiptBackend("local", expense_http, lambda key: (root / key).read_bytes())
    endpoint = request.getfixturevalue("s3_endpoint")
    http = request.getfixturevalue("s3_expense_http")
    client = s3_client(endpoint)
    return ReceiptBackend("s3", http, lambda key: client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read())


@pytest.fixture
def runtime(expense_app, expense_http):
    return expense_app.state.runtime


@pytest.fixture
def api(expense_http):
    return GraphQLClient(expense_http)


async def project_memberships(runtime, auth_runtime) -> None:
    from subgraphs.auth.models import outbox as auth_outbox
    from subgraphs.expense.models import members

    async with auth_runtime.sessionmaker() as s:
        rows = (await s.execute(select(auth_outbox).where(auth_outbox.c.type.like("auth.member_%")))).all()
    async with transaction(runtime.sessionmaker) as s:
        for r in rows:
            await apply_membership_event(s, members, Event(
                id=r.event_id, type=r.type, version=r.version, organization_id=r.organization_id, actor_id=r.actor_id,
                aggregate_id=r.aggregate_id, occurred_at=r.occurred_at, payload=r.payload))


class Team:
    """One organization: an OWNER, two APPROVERs and a MEMBER, roles projected into expense."""

    def __init__(self, api, owner, approver, approver2, member):
        self.api, self.owner, self.approver, self.approver2, self.member = api, owner, approver, approver2, member

    async def ok(self, who: Account, query: str, variables: dict | None = None) -> dict:
        return await self.api.ok(query, variables, token=who.token)


@pytest.fixture
def new_team(api, gql, sign_up, auth_runtime, runtime, mail_token):
    async def make() -> Team:
        owner = await sign_up("Kemper")
        approver = await _join(gql, sign_up, mail_token, owner, "APPROVER")
        approver2 = await _join(gql, sign_up, mail_token, owner, "APPROVER")
        member = await _join(gql, sign_up, mail_token, owner, "MEMBER")
        await project_memberships(runtime, auth_runtime)
        return Team(api, owner, approver, approver2, member)

    return make


@pytest.fixture
async def team(new_team) -> Team:
    return await new_team()
