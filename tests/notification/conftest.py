from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import socket
import uuid
from contextlib import asynccontextmanager

import pytest
import uvicorn
from aiosmtpd.controller import Controller

from shared.embedded import free_port
from shared.runtime import Runtime, build_runtime
from shared.tokens import Principal
from tests.events.isolation import private_settings
# Real users and tokens come from the auth subgraph's own test fixtures.
from tests.auth.conftest import GATEWAY_SECRET, auth_app, auth_http, gql, ip, sign_up  # noqa: F401


settings = private_settings("notification")  # see tests/events/isolation.py


@pytest.fixture(scope="session")
async def rt(settings):
    runtime = build_runtime("notification-test", settings)
    yield runtime
    await runtime.close()


def with_settings(rt: Runtime, **changes) -> Runtime:
    """The same engine and Redis with other settings (SMTP port, invoice service URL)."""
    return dataclasses.replace(rt, settings=rt.settings.model_copy(update=changes))


class Inbox:
    """aiosmtpd handler keeping what it receives; `reply` makes it answer DATA with an error."""

    def __init__(self, reply: str | None = None):
        self.messages: list[email.message.EmailMessage] = []
        self.reply = reply

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.reply:
            return self.reply
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"


class SmtpListener:
    def __init__(self, port: int, reply: str | None = None, inbox: Inbox | None = None):
        self.port, self.inbox = port, inbox or Inbox(reply)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=port)

    @property
    def messages(self):
        return self.inbox.messages

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()


@pytest.fixture
def smtp():
    listener = SmtpListener(free_port()).start()
    yield listener
    listener.stop()


@asynccontextmanager
async def serve_app(app, port: int | None = None):
    """Run an ASGI app under a real uvicorn server on a free loopback port."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           ws="websockets-sansio" if _has_sansio() else "websockets"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _has_sansio() -> bool:
    try:
        import uvicorn.protocols.websockets.websockets_sansio_impl  # noqa: F401
        return True
    except ImportError:
        return False


def principal(user_id=None, org_id=None, perms=("notification:manage",)) -> Principal:
    return Principal(user_id=user_id or uuid.uuid4(), organization_id=org_id or uuid.uuid4(),
                     permissions=frozenset(perms), token_id=uuid.uuid4().hex)


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- real users and tokens from the auth subgraph, and the notification app verifying them -----

@pytest.fixture(scope="session")
def auth_settings(database_url, redis_url):
    """The auth app stays on the shared database: its active signing key is cached per process,
    so every auth app of the run must sign from the same keys table."""
    from shared.config import load_settings

    return load_settings(database_url=database_url, redis_url=redis_url, app_env="test",
                         gateway_shared_secret=GATEWAY_SECRET)


def verifying_runtime_factory(auth_database_url: str):
    """Notification runtimes that verify tokens against the auth keys table directly (in
    production the same JWKS is fetched over HTTP from the auth service)."""
    from shared.db import make_engine, make_sessionmaker
    from shared.tokens import TokenVerifier
    from subgraphs.auth import keys

    def factory(name, settings):
        runtime = build_runtime(name, settings)
        auth_engine = make_engine(auth_database_url, pool_size=1)
        auth_sessions = make_sessionmaker(auth_engine)

        async def source() -> dict:
            async with auth_sessions() as session:
                return await keys.jwks(session, settings)

        runtime.verifier = TokenVerifier(source, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                         min_refresh_interval=0.5)
        close = runtime.close

        async def close_both():
            await close()
            await auth_engine.dispose()

        runtime.close = close_both
        return runtime

    return factory


@pytest.fixture(scope="session")
def notification_runtime_factory(auth_settings):
    return verifying_runtime_factory(auth_settings.database_url)


@pytest.fixture(scope="session")
def notification_app(settings, notification_runtime_factory):
    from subgraphs.notification.app import create_app

    return create_app(settings, runtime_factory=notification_runtime_factory)


@pytest.fixture(scope="session")
async def notification_http(notification_app, auth_http):  # auth_http: the signing key exists
    from tests.conftest import running_app

    async with running_app(notification_app) as http:
        yield http


@pytest.fixture
def ngql(notification_http):
    from tests.graphql_client import GraphQLClient

    return GraphQLClient(notification_http)


def claims(token: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(user_id, organization_id) of an access token."""
    import jwt

    c = jwt.decode(token, options={"verify_signature": False})
    return uuid.UUID(c["sub"]), uuid.UUID(c["org"])


async def token_with(auth_rt: Runtime, user_id: uuid.UUID, org_id: uuid.UUID, perms: list[str]) -> str:
    """A genuine access token (signed with the auth service's key) carrying exactly `perms`."""
    from subgraphs.auth import keys

    async with auth_rt.sessionmaker() as session, session.begin():
        return await keys.sign(session, auth_rt.settings, {"sub": str(user_id), "org": str(org_id), "perms": sorted(perms)},
                               ttl=300, audience=auth_rt.settings.jwt_audience)
