"""The service registry is the one list: every folder is in it, and every config that names
services agrees with it (supergraph.yaml is generated; router.yaml and compose.yaml are checked)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shared import migrations, registry
from shared.registry import SERVICES, subgraphs

ROOT = Path(__file__).resolve().parents[1]


def test_every_subgraph_folder_is_registered_and_every_registered_subgraph_exists() -> None:
    folders = {p.name for p in (ROOT / "subgraphs").iterdir() if (p / "app.py").is_file()}
    assert folders == {s.name for s in subgraphs()}, "add the folder to shared/registry.py (or remove the entry)"
    for s in SERVICES:
        if s.schema and not s.planned:
            assert (ROOT / "subgraphs" / s.name / "migrations" / "env.py").is_file(), s.name


def test_names_and_ports_are_unique() -> None:
    assert len({s.name for s in SERVICES}) == len(SERVICES)
    ports = [s.port for s in SERVICES if s.port is not None]
    assert len(set(ports)) == len(ports)
    assert registry.service("expense").port == 4003 and registry.service("mcp").port == 4005


def test_migrations_and_relay_read_the_registry() -> None:
    assert migrations.SERVICES == registry.schema_names()
    assert "auth" == migrations.SERVICES[0]
    assert set(registry.outbox_schemas()) <= set(registry.schema_names())


def test_supergraph_yaml_is_generated_from_the_registry() -> None:
    assert registry.SUPERGRAPH_YAML.read_text() == registry.supergraph_yaml(), "run `make schema`"
    assert registry.main(["check"]) == 0


def test_router_overrides_every_subgraph() -> None:
    cfg = yaml.safe_load((ROOT / "supergraph" / "router.yaml").read_text())
    expected = {s.name: f"${{env.{s.url_env}:-http://{s.name}:{s.port}/graphql}}" for s in subgraphs()}
    assert cfg["override_subgraph_url"] == expected


def test_compose_runs_every_registered_service() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    router_env = services["router"]["environment"]
    for s in subgraphs():
        cmd = services[s.name]["command"]
        assert cmd[cmd.index("--port") + 1] == str(s.port), s.name
        assert re.fullmatch(rf"http://{s.name}:{s.port}/graphql", router_env[s.url_env]), s.name
    assert "worker" in services
    for b in registry.bridges():
        assert services[b.name]["command"][-1] == b.module and services[b.name].get("healthcheck"), b.name
