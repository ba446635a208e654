"""The persisted operations of schema/operations/: Hive Gateway's safelist and Apollo's manifest
(supergraph/persist.mjs writes both), keyed by the hashes @apollo/client's persisted-query link
computes, and a broken operation failing the build."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAFELIST = ROOT / "supergraph" / "persisted-documents.json"
APOLLO = ROOT / "supergraph" / "persisted-query-manifest.json"

needs_node = pytest.mark.skipif(shutil.which("node") is None or not (ROOT / "supergraph" / "node_modules").is_dir(),
                                reason="node or supergraph/node_modules missing")


def test_apollo_manifest_lists_the_safelist_with_names_and_types():
    safelist = json.loads(SAFELIST.read_text())
    apollo = json.loads(APOLLO.read_text())
    assert apollo["format"] == "apollo-persisted-query-manifest" and apollo["version"] == 1
    ops = apollo["operations"]
    assert {op["id"]: op["body"] for op in ops} == safelist
    for op in ops:
        assert hashlib.sha256(op["body"].encode()).hexdigest() == op["id"]
        assert op["type"] in ("query", "mutation", "subscription")
        assert op["body"].startswith(f"{op['type']} {op['name']}")
    assert len({op["name"] for op in ops}) == len(ops)


@needs_node
def test_an_operation_the_supergraph_cannot_serve_fails_the_check(tmp_path):
    ops = tmp_path / "operations"
    shutil.copytree(ROOT / "schema" / "operations", ops)
    (ops / "Broken.graphql").write_text("query Broken { me { noSuchField } }\n")
    out = tmp_path / "pd.json"
    proc = subprocess.run(["node", "supergraph/persist.mjs", "--operations", str(ops), "--output", str(out), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Broken.graphql" in proc.stderr and "noSuchField" in proc.stderr


@needs_node
def test_the_ids_are_the_hashes_apollo_clients_persisted_query_link_sends():
    """Apollo Client adds __typename to the document before hashing it, so a hash of the file as
    written would never match: a mobile client held to the safelist could use none of it."""
    proc = subprocess.run(["node", "tests/supergraph/apollo_hashes.mjs"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sent = json.loads(proc.stdout.strip().splitlines()[-1])
    apollo = json.loads(APOLLO.read_text())
    assert sent == {op["name"]: op["id"] for op in apollo["operations"]}
