"""Validate supergraph/router.yaml (no GraphOS) and router.yaml + router.graphos.yaml against Apollo Router 2.13.1's configuration JSON Schema.

The router expands ``${env.NAME}`` / ``${env.NAME:-default}`` in every string value before
validating and, when a string changed, re-reads it as YAML and keeps a bool, number or null
(apollo-router/src/configuration/expansion.rs). ``expand_router_env`` mirrors that.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import pytest
import yaml

from shared.registry import subgraphs

ROOT = Path(__file__).resolve().parents[2]
ROUTER_YAML = ROOT / "supergraph" / "router.yaml"
GRAPHOS_YAML = ROOT / "supergraph" / "router.graphos.yaml"
# Keys Router 2.x refuses to start with unless a GraphOS plan covers them
# (/work/shared/data/apollo-router/README.md).
GRAPHOS_KEYS = {"authentication", "subscription", "persisted_queries", "coprocessor", "demand_control",
                "batching", "authorization", "preview_entity_cache", "telemetry_enterprise"}
GRAPHOS_LIMITS = {"max_depth", "max_height", "max_aliases", "max_root_fields"}
SCHEMA = Path(__file__).resolve().parent / "fixtures" / "router-config.schema.json"

_EXPANSION = re.compile(r"\$\{([^}]*)\}")
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


class ExpansionError(ValueError):
    pass


def _coerce(text: str) -> Any:
    """Like the router's ``coerce``: YAML bool / number / null, else the string."""
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _expand_string(value: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        name, sep, default = key.partition(":-")
        if not name.startswith("env."):
            # file.<path> also exists in the router; this project does not use it.
            raise ExpansionError(f"unsupported expansion ${{{key}}} (only env.* is used here)")
        var = name[len("env."):]
        current = env.get(var)
        if current:  # shellexpand: ':-' falls back when unset or empty
            return current
        if sep:
            return default
        if current is not None:
            return current
        raise ExpansionError(f"environment variable {var} is not set and ${{{key}}} has no default")

    return _EXPANSION.sub(replace, value)


def expand_router_env(config: Any, env: Mapping[str, str] | None = None) -> Any:
    env = {} if env is None else env
    if isinstance(config, dict):
        return {k: expand_router_env(v, env) for k, v in config.items()}
    if isinstance(config, list):
        return [expand_router_env(v, env) for v in config]
    if isinstance(config, str):
        expanded = _expand_string(config, env)
        return _coerce(expanded) if expanded != config else config
    return config


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    assert schema.get("$schema", "").startswith("http://json-schema.org/draft-07/"), "expected a draft-07 schema"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _leaves(error: jsonschema.ValidationError):
    if not error.context:
        yield error
    for sub in error.context:
        yield from _leaves(sub)


def _errors(config: Any) -> list[str]:
    """Readable errors; anyOf/oneOf failures are expanded into their branches' leaf errors."""
    out = []
    for e in sorted(_validator().iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        for leaf in _leaves(e):
            out.append(f"{'/'.join(map(str, leaf.absolute_path)) or '<root>'}: {leaf.message[:300]}")
    return out


def overlay(base: Any, extra: Any) -> Any:
    """The documented merge (yq's `*`): maps merged key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: overlay(base[k], v) if k in base else v for k, v in extra.items()}}
    return extra


@pytest.fixture(scope="module")
def free_config() -> dict:
    return yaml.safe_load(ROUTER_YAML.read_text())


@pytest.fixture(scope="module")
def raw_config(free_config: dict) -> dict:
    """router.yaml with the GraphOS overlay merged in."""
    return overlay(free_config, yaml.safe_load(GRAPHOS_YAML.read_text()))


def test_free_router_yaml_needs_no_graphos(free_config: dict) -> None:
    assert not GRAPHOS_KEYS & set(free_config), GRAPHOS_KEYS & set(free_config)
    assert not GRAPHOS_LIMITS & set(free_config.get("limits", {}))
    assert _errors(expand_router_env(free_config, {})) == []


def test_free_router_keeps_subgraph_connections_shorter_than_the_subgraphs(free_config: dict) -> None:
    from shared.serving import KEEPALIVE_SECONDS

    idle = free_config["traffic_shaping"]["all"]["pool_idle_timeout"]
    assert idle.endswith("s") and int(idle[:-1]) < KEEPALIVE_SECONDS


def test_graphos_overlay_adds_only_what_needs_a_plan(raw_config: dict, free_config: dict) -> None:
    graphos = yaml.safe_load(GRAPHOS_YAML.read_text())
    assert {"authentication", "subscription", "persisted_queries"} <= set(graphos)
    assert GRAPHOS_LIMITS <= set(raw_config["limits"])
    assert raw_config["persisted_queries"]["safelist"]["enabled"] is True
    assert raw_config["apq"]["enabled"] is False  # the router refuses APQ together with a safelist
    # Everything the free config sets is still there.
    assert {k: raw_config[k] for k in free_config if k != "limits"} == {k: v for k, v in free_config.items() if k != "limits"}


# --- the expansion helper itself -------------------------------------------------------------


def test_expansion_defaults_and_coercion() -> None:
    cfg = {
        "a": "${env.A:-http://auth:4001/graphql}",
        "b": "${env.B:-true}",
        "n": "${env.N:-42}",
        "f": "${env.F:-1.5}",
        "s": "prefix-${env.S:-x}",
        "plain": "10",  # not expanded -> stays a string, like the router
        "lst": ["${env.L:-false}"],
    }
    out = expand_router_env(cfg, {"N": "7"})
    assert out == {
        "a": "http://auth:4001/graphql",
        "b": True,
        "n": 7,
        "f": 1.5,
        "s": "prefix-x",
        "plain": "10",
        "lst": [False],
    }
    assert expand_router_env("${env.E:-d}", {"E": ""}) == "d"
    with pytest.raises(ExpansionError):
        expand_router_env("${env.MISSING}", {})


# --- router.yaml ------------------------------------------------------------------------------


def test_router_yaml_is_valid_with_defaults(raw_config: dict) -> None:
    assert _errors(expand_router_env(raw_config, {})) == []


@pytest.mark.parametrize("which", ["free", "graphos"])
def test_router_yaml_is_valid_with_compose_env(which: str, free_config: dict, raw_config: dict) -> None:
    config = free_config if which == "free" else raw_config
    env = {
        **{s.url_env: f"http://{s.name}:{s.port}/graphql" for s in subgraphs()},
        "JWKS_URL": "http://auth:4001/.well-known/jwks.json",
        "JWT_ISSUER": "facturacion-auth",
        "JWT_AUDIENCE": "facturacion-api",
        "CORS_ORIGIN": "https://app.facturacion.example",
        "CORS_ORIGINS_REGEX": r"^https://[a-z]+\.facturacion\.example$",
        "ROUTER_MAX_SUBSCRIPTIONS": "500",
    }
    cfg = expand_router_env(config, env)
    assert _errors(cfg) == []
    if which == "graphos":
        assert cfg["subscription"]["max_opened_subscriptions"] == 500


def test_router_yaml_contents(raw_config: dict) -> None:
    cfg = expand_router_env(raw_config, {})
    assert cfg["supergraph"]["listen"] == "0.0.0.0:4000"
    assert cfg["supergraph"]["path"] == "/graphql"
    assert cfg["supergraph"]["introspection"] is False
    assert cfg["health_check"]["enabled"] is True
    propagated = {op["propagate"]["named"] for op in cfg["headers"]["all"]["request"] if "propagate" in op}
    assert {"authorization", "x-request-id"} <= propagated
    assert cfg["override_subgraph_url"] == {s.name: f"http://{s.name}:{s.port}/graphql" for s in subgraphs()}
    jwt = cfg["authentication"]["router"]["jwt"]
    assert jwt["jwks"][0]["url"] == "http://auth:4001/.well-known/jwks.json"
    assert set(jwt["jwks"][0]["algorithms"]) == {"RS256", "EdDSA"}
    assert jwt["jwks"][0]["issuers"] == ["facturacion-auth"]
    assert jwt["jwks"][0]["audiences"] == ["facturacion-api"]
    passthrough = cfg["subscription"]["mode"]["passthrough"]["all"]
    assert passthrough == {**passthrough, "path": "/graphql", "protocol": "graphql_ws"}


def test_router_yaml_routes_every_composed_subgraph(raw_config: dict) -> None:
    sg = yaml.safe_load((ROOT / "supergraph" / "supergraph.yaml").read_text())
    assert set(raw_config["override_subgraph_url"]) == set(sg["subgraphs"])


# --- a broken config must fail ----------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["supergraph"].update(listen_port=4000), "listen_port"),  # unknown key
        (lambda c: c["subscription"]["mode"]["passthrough"]["all"].update(protocol="graphql-transport-ws"), "protocol"),
        (lambda c: c["authentication"]["router"]["jwt"].update(on_error="Ignore"), "on_error"),
        (lambda c: c["authentication"]["router"]["jwt"]["jwks"][0].pop("url"), "url"),
        (lambda c: c["limits"].update(max_depth="twelve"), "max_depth"),
        (lambda c: c["headers"]["all"]["request"].append({"forward": {"named": "x"}}), "request"),
        (lambda c: c.update(healthcheck={"enabled": True}), "healthcheck"),
    ],
)
def test_broken_configs_fail(raw_config: dict, mutate, expected: str) -> None:
    cfg = copy.deepcopy(raw_config)
    mutate(cfg)
    errors = _errors(expand_router_env(cfg, {}))
    assert errors, "a broken config validated"
    assert any(expected in e for e in errors), errors


def test_unexpanded_bool_fails(raw_config: dict) -> None:
    # Without the router's coercion, "${env.X:-false}" would stay a string and fail validation;
    # with it, a bool is produced. Guards the helper against regressions.
    cfg = copy.deepcopy(raw_config)
    cfg["supergraph"]["introspection"] = "${env.ROUTER_INTROSPECTION:-false}"
    assert _errors(expand_router_env(cfg, {})) == []
    assert _errors(cfg)  # unexpanded string is not a boolean
