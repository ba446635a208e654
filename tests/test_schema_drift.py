"""CI fails when schema/ no longer matches the code: re-export each subgraph's SDL and recompose."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.parent.name for p in (ROOT / "subgraphs").glob("*/schema.py"))


@pytest.mark.parametrize("service", SERVICES)
def test_exported_sdl_matches_the_code(service):
    schema = importlib.import_module(f"subgraphs.{service}.schema").schema
    committed = (ROOT / "schema" / f"{service}.graphql")
    assert committed.exists(), f"run `make schema`: schema/{service}.graphql is missing"
    assert committed.read_text().strip() == schema.as_str().strip(), f"schema/{service}.graphql is stale: run `make schema`"


@pytest.mark.parametrize("service", SERVICES)
async def test_service_sdl_answers_the_same(service):
    """What the gateway would fetch (`_service { sdl }`) is what we committed."""
    schema = importlib.import_module(f"subgraphs.{service}.schema").schema
    result = await schema.execute("{ _service { sdl } }")
    assert result.errors is None
    assert result.data["_service"]["sdl"].strip() == (ROOT / "schema" / f"{service}.graphql").read_text().strip()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is required to compose")
def test_supergraph_is_composed_from_the_committed_sdl():
    proc = subprocess.run(["node", "supergraph/compose.mjs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is required")
def test_persisted_documents_manifest_is_current():
    proc = subprocess.run(["node", "supergraph/persist.mjs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
