from __future__ import annotations

import base64

import pytest
import strawberry

from shared.config import SettingsError, load_settings
from shared.crypto import SecretDecryptionError, seal, unseal
from shared.errors import InputError
from shared.pagination import decode_cursor, encode_cursor, page_size

BASE = {"database_url": "postgresql://u@h/db", "redis_url": "redis://h:6379/0"}


def test_settings_errors_name_each_bad_variable(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SettingsError) as exc:
        load_settings(key_encryption_key="corta")
    msg = str(exc.value)
    assert "DATABASE_URL: falta" in msg and "REDIS_URL: falta" in msg and "KEY_ENCRYPTION_KEY" in msg


def test_production_refuses_the_development_key():
    with pytest.raises(SettingsError, match="KEY_ENCRYPTION_KEY must be set in production"):
        load_settings(**BASE, app_env="production")


def test_sealed_secret_is_bound_to_its_context_and_survives_key_rotation():
    old = load_settings(**BASE)
    sealed = seal(b"llave privada CSD", context="invoice.csd:org1:0001", settings=old)
    assert b"llave" not in sealed.encode()
    assert unseal(sealed, context="invoice.csd:org1:0001", settings=old) == b"llave privada CSD"
    with pytest.raises(SecretDecryptionError):
        unseal(sealed, context="invoice.csd:org2:0001", settings=old)
    new_key = base64.b64encode(b"n" * 32).decode()
    rotated = load_settings(**BASE, key_encryption_key=new_key, key_encryption_key_id="k2",
                            key_encryption_old_keys=f"dev:{old.key_encryption_key}")
    assert unseal(sealed, context="invoice.csd:org1:0001", settings=rotated) == b"llave privada CSD"
    assert seal(b"x", context="c", settings=rotated).split(".")[1] == "k2"
    without_old = load_settings(**BASE, key_encryption_key=new_key, key_encryption_key_id="k2")
    with pytest.raises(SecretDecryptionError):
        unseal(sealed, context="invoice.csd:org1:0001", settings=without_old)


def test_cursors_round_trip_and_garbage_is_a_typed_error():
    assert decode_cursor(encode_cursor(["2026-01-01T00:00:00", "abc"])) == ["2026-01-01T00:00:00", "abc"]
    with pytest.raises(InputError) as exc:
        decode_cursor("%%%not-base64")
    assert exc.value.errors[0].code == "INVALID_CURSOR"
    assert page_size(None) == 20
    with pytest.raises(InputError):
        page_size(101)
    with pytest.raises(InputError):
        page_size(-1)


async def test_input_error_in_a_query_keeps_its_code_instead_of_being_masked():
    import strawberry

    from shared.graphql import build_schema

    @strawberry.type
    class Query:
        @strawberry.field
        def page(self, after: str | None = None) -> int:
            decode_cursor(after)
            return 1

    result = await build_schema(query=Query).execute('{ page(after: "%%bad") }')
    assert result.errors[0].message == "El cursor no es válido."
    assert result.errors[0].extensions["code"] == "INVALID_CURSOR"
    assert result.errors[0].extensions["field"] == ["after"]


def test_typed_cursor_refuses_well_formed_garbage():
    import uuid
    from datetime import datetime

    good = encode_cursor(["2026-01-01T00:00:00+00:00", str(uuid.UUID(int=1))])
    at, ident = decode_cursor(good, datetime.fromisoformat, uuid.UUID)
    assert at.year == 2026 and ident == uuid.UUID(int=1)
    for garbage in (["x", "y"], ["2026-01-01T00:00:00"], [1, 2, 3], [None, None]):
        with pytest.raises(InputError) as exc:
            decode_cursor(encode_cursor(garbage), datetime.fromisoformat, uuid.UUID)
        assert exc.value.errors[0].code == "INVALID_CURSOR"


@strawberry.type
class DepthNode:
    @strawberry.field
    def child(self) -> "DepthNode":
        return DepthNode()

    @strawberry.field
    def name(self) -> str:
        return "n"


@strawberry.type
class DepthQuery:
    @strawberry.field
    def root(self) -> DepthNode:
        return DepthNode()


def _nested_schema():
    from shared.graphql import build_schema

    return build_schema(query=DepthQuery)


async def test_depth_limit_refuses_deep_queries(monkeypatch):
    monkeypatch.delenv("GRAPHQL_MAX_DEPTH", raising=False)
    schema = _nested_schema()
    shallow = "{ root { " + "child { " * 8 + "name" + " }" * 8 + " } }"
    deep = "{ root { " + "child { " * 20 + "name" + " }" * 20 + " } }"
    assert (await schema.execute(shallow)).errors is None
    result = await schema.execute(deep)
    assert result.errors and "exceeds maximum operation depth" in result.errors[0].message


async def test_introspection_is_off_in_production_and_on_in_development(monkeypatch):
    monkeypatch.delenv("GRAPHQL_INTROSPECTION", raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    assert (await _nested_schema().execute("{ __schema { queryType { name } } }")).errors is None
    monkeypatch.setenv("APP_ENV", "production")
    prod = _nested_schema()
    result = await prod.execute("{ __schema { queryType { name } } }")
    assert result.errors and "introspection" in result.errors[0].message.lower()
    # Federation's own `_service { sdl }` is not introspection: the gateway still composes.
    assert (await prod.execute("{ __typename }")).errors is None


async def test_validation_runs_once_per_document(monkeypatch):
    """The validation cache hits: a repeated document is not validated again (the limiters' rule
    classes are part of the cache key, so they must be the same classes on every request)."""
    import strawberry.schema.schema as strawberry_schema

    calls = []
    real = strawberry_schema.validate

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "validate", counting)
    schema = _nested_schema()
    doc = "{ root { child { name } } __typename }  # test_validation_runs_once_per_document"
    for _ in range(3):
        assert (await schema.execute(doc)).errors is None
    assert len(calls) == 1
    # The limiters still refuse (and their verdict is cached too).
    deep = "{ root { " + "child { " * 20 + "name" + " }" * 20 + " } }"
    for _ in range(2):
        result = await schema.execute(deep)
        assert result.errors and "exceeds maximum operation depth" in result.errors[0].message
    assert len(calls) == 2
