"""Structural checks of compose.yaml (and the Dockerfile it builds).

`docker compose config` is run as well when the compose plugin is available; on machines without
it (like CI here) these checks stand in for it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shared.registry import subgraphs
from shared.serving import KEEPALIVE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
GENERATED = {"schema/supergraph.graphql"}  # written by `node supergraph/compose.mjs`
APP_SERVICES = {s.name: s.port for s in subgraphs()}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _depends(svc: dict) -> dict:
    dep = svc.get("depends_on") or {}
    return {d: {"condition": "service_started"} for d in dep} if isinstance(dep, list) else dep


def _healthcheck_cmd(svc: dict) -> str:
    test = (svc.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def _bind_mounts(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            target = rest.split(":")[0]
        else:
            src, target = v.get("source", ""), v.get("target", "")
        if src.startswith((".", "/")):
            out.append((src, target))
    return out


def test_top_level_keys(compose: dict) -> None:
    allowed = {"name", "services", "volumes", "networks", "configs", "secrets"}
    unknown = {k for k in compose if k not in allowed and not k.startswith("x-")}
    assert not unknown, f"unknown top-level keys: {unknown}"


def test_expected_services(services: dict) -> None:
    assert {"postgres", "redis", *APP_SERVICES, "worker", "router", "mailcatcher"} <= set(services)


def test_every_service_has_image_or_build(services: dict) -> None:
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), name


def test_every_service_with_a_port_has_a_healthcheck(services: dict) -> None:
    for name, svc in services.items():
        if svc.get("ports") or svc.get("expose"):
            hc = svc.get("healthcheck") or {}
            assert hc.get("test") and not hc.get("disable"), f"{name} listens on a port but has no healthcheck"


def test_depends_on_targets_exist_and_are_healthy(services: dict) -> None:
    for name, svc in services.items():
        for target, spec in _depends(svc).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            if spec.get("condition") == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} to be healthy, but it has no healthcheck"


def test_no_dependency_cycles(services: dict) -> None:
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 1:
            raise AssertionError("dependency cycle: " + " -> ".join(path + [n]))
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in _depends(services[n]):
            visit(d, path + [n])
        state[n] = 2

    for n in services:
        visit(n, [])


def test_named_volumes_are_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src and not src.startswith((".", "/")):
                assert src in declared, f"{name} uses undeclared volume {src}"


def test_data_services_persist_and_check_health(services: dict) -> None:
    assert services["postgres"]["image"].startswith("postgres:17")
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in _healthcheck_cmd(services["postgres"])
    assert "ping" in _healthcheck_cmd(services["redis"])
    for name in ("postgres", "redis"):
        assert services[name].get("volumes"), f"{name} has no volume"


def test_app_services_share_one_image_and_check_readiness(services: dict) -> None:
    images = {services[n].get("image") for n in [*APP_SERVICES, "worker"]}
    assert len(images) == 1, images
    for name, port in APP_SERVICES.items():
        svc = services[name]
        assert svc["build"]["dockerfile"] == "Dockerfile"
        cmd = svc["command"]
        assert cmd[:2] == ["uvicorn", f"subgraphs.{name}.app:app"], cmd
        assert cmd[cmd.index("--port") + 1] == str(port)
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
        # Idle keep-alive outlasts every client's pool (shared/serving.py says why).
        assert cmd[cmd.index("--timeout-keep-alive") + 1] == str(KEEPALIVE_SECONDS), (name, cmd)
        hc = _healthcheck_cmd(svc)
        assert "urllib" in hc and f"127.0.0.1:{port}/health/ready" in hc, hc
        deps = _depends(svc)
        for infra in ("postgres", "redis"):
            assert deps.get(infra, {}).get("condition") == "service_healthy", (name, infra)
    assert services["worker"]["command"] == ["python", "-m", "workers.main"]


def test_no_subgraph_publishes_its_graphql_port(services: dict) -> None:
    """GraphQL is reachable only through the gateway (which checks limits and the client
    address); signed links are published by the -links copies, which do not serve /graphql."""
    for name in APP_SERVICES:
        assert not services[name].get("ports"), f"{name} publishes a port: its /graphql would bypass the gateway"
        assert "--no-proxy-headers" in services[name]["command"], name
    for name, owner in (("invoice-links", "invoice"), ("expense-links", "expense")):
        svc = services[name]
        assert svc["environment"]["SERVE_GRAPHQL"] == "false", name
        assert svc["command"][:2] == ["uvicorn", f"subgraphs.{owner}.app:app"] and svc.get("ports"), name


def test_app_environment(services: dict) -> None:
    env = services["auth"]["environment"]
    for key in ("DATABASE_URL", "REDIS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "KEY_ENCRYPTION_KEY", "SMTP_HOST", "SMTP_PORT"):
        assert key in env, key
    assert env["APP_ENV"] == "production"
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["SMTP_HOST"] == "mailcatcher"


def test_router_mounts_files_that_exist(services: dict) -> None:
    router = services["router"]
    assert router["image"] == "ghcr.io/apollographql/router:v2.13.1"
    mounts = _bind_mounts(router)
    assert mounts, "router mounts nothing"
    for src, _target in mounts:
        rel = Path(src).as_posix().removeprefix("./")
        path = ROOT / rel
        assert path.is_file() or rel in GENERATED, f"router mounts {src}, which is not in the repo"
    targets = {t for _s, t in mounts}
    cmd = router["command"]
    config = cmd[cmd.index("--config") + 1]
    supergraph = cmd[cmd.index("--supergraph") + 1]
    assert config in targets and supergraph in targets
    sources = {t: Path(s).as_posix().removeprefix("./") for s, t in mounts}
    assert sources[config] == "supergraph/router.yaml"
    assert sources[supergraph] == "schema/supergraph.graphql"


def test_generated_supergraph_is_present() -> None:
    path = ROOT / "schema" / "supergraph.graphql"
    if not path.exists():
        pytest.skip("schema/supergraph.graphql not composed yet (run `make schema`)")
    assert "@join__graph" in path.read_text()


def test_router_env_points_at_services(services: dict) -> None:
    router = services["router"]
    env = router["environment"]
    assert not {"APOLLO_KEY", "APOLLO_GRAPH_REF"} & set(env)  # router.yaml needs no GraphOS plan
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    for name, port in APP_SERVICES.items():
        url = env[f"{name.upper()}_URL"]
        m = re.fullmatch(r"http://([a-z0-9_-]+):(\d+)/graphql", url)
        assert m and m.group(1) == name and int(m.group(2)) == port, url
        assert _depends(router)[name]["condition"] == "service_healthy"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage must not run as root"


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_compose_config() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    res = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "x"},
    )
    assert res.returncode == 0, res.stderr


# --- the two gateways --------------------------------------------------------------------------

# host port -> the only services allowed to publish it (loopback-only where it says so)
PUBLISHED = {"gateway": {"4000:4000"}, "router": {"${ROUTER_PORT:-4080}:4000"},
             "mailcatcher": {"127.0.0.1:8025:8025"}, "invoice-links": {"4002:4002"},
             "expense-links": {"4003:4003"}, "mcp": {"4005:4005"}}


def test_hive_gateway_is_the_default_edge_and_the_router_a_profile(services: dict) -> None:
    gateway, router = services["gateway"], services["router"]
    assert "profiles" not in gateway  # starts with a plain `docker compose up`
    assert router["profiles"] == ["apollo-router"]
    assert gateway["build"] == {"context": "supergraph", "dockerfile": "Dockerfile"}
    assert (ROOT / "supergraph" / "Dockerfile").is_file()
    dockerfile = (ROOT / "supergraph" / "Dockerfile").read_text()
    for copied in ("gateway.config.mjs", "upstream.mjs", "ratelimit.mjs", "hygiene.mjs", "apq.mjs", "gateway.sh",
                   "persisted-documents.json", "supergraph.yaml"):
        assert copied in dockerfile and (ROOT / "supergraph" / copied).is_file(), copied
    env = gateway["environment"]
    for s in subgraphs():
        assert env[s.url_env] == f"http://{s.name}:{s.port}/graphql"
        assert _depends(gateway)[s.name]["condition"] == "service_healthy"
    assert env["NODE_ENV"] == "production" and "GATEWAY_SHARED_SECRET" in env
    assert env["REDIS_URL"].startswith("redis://redis:6379")  # rate limits shared by every instance
    assert "/readiness" in _healthcheck_cmd(gateway)
    assert not {"APOLLO_KEY", "APOLLO_GRAPH_REF"} & set(router["environment"])  # no GraphOS needed


def test_every_long_running_service_checks_its_health(services: dict) -> None:
    for name, svc in services.items():
        if svc.get("restart") == "no":  # one-shot (migrate)
            continue
        assert _healthcheck_cmd(svc), f"{name} has no health check"


def test_no_port_published_that_should_not_be(services: dict) -> None:
    for name, svc in services.items():
        ports = {str(p) for p in svc.get("ports") or []}
        assert ports <= PUBLISHED.get(name, set()), (name, ports)
