"""`make test-n8n`: run examples/n8n/stamp-invoice-from-webhook.json headless in a real n8n against
the running stack (`make dev`), and check the invoice came back STAMPED.

Steps: log in as the demo user through the gateway, create an API key, create a draft invoice for
the demo customer, import a Bearer credential holding that key and the example workflow (with the
draft's id in its test node) into a throw-away n8n user folder, then `n8n execute`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
GATEWAY = os.environ.get("GATEWAY_URL", "http://127.0.0.1:4000/graphql")
BRIDGE = os.environ.get("MCP_BRIDGE_URL", "http://127.0.0.1:4005/mcp")
N8N = os.environ.get("N8N_BIN", str(HERE / "node_modules" / ".bin" / "n8n"))


def gql(query: str, variables: dict | None = None, token: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    data = httpx.post(GATEWAY, json={"query": query, "variables": variables or {}}, headers=headers, timeout=30).json()
    if data.get("errors"):
        sys.exit(f"GraphQL error: {data['errors']}")
    return data["data"]


def main() -> None:
    token = gql("mutation { logIn(input: {email: \"demo@facturacion.local\", password: \"Demo-Factura-2026\"}) { tokens { accessToken } } }")["logIn"]["tokens"]["accessToken"]
    key = gql("mutation($n: String!) { createApiKey(name: $n, permissions: [\"invoice:read\", \"invoice:issue\"]) { key } }",
              {"n": "n8n smoke " + uuid.uuid4().hex[:6]}, token)["createApiKey"]["key"]
    customer = gql("{ customers(first: 1) { edges { node { id } } } }", token=token)["customers"]["edges"][0]["node"]["id"]
    draft = gql("""mutation($i: InvoiceInput!) { createInvoice(input: $i) { invoice { id } userErrors { code message } } }""",
                {"i": {"customerId": customer, "paymentForm": "03", "paymentMethod": "PUE", "concepts": [{
                    "productCode": "84111506", "quantity": "1", "unitCode": "E48", "description": "Servicio n8n",
                    "unitPrice": "100.00", "taxObject": "02", "taxes": [{"tax": "002", "factorType": "Tasa", "rate": "0.160000"}]}]}},
                token)["createInvoice"]["invoice"]["id"]

    workflow = json.loads((HERE / "stamp-invoice-from-webhook.json").read_text())
    for node in workflow["nodes"]:
        if node["name"] == "Factura de prueba":
            node["parameters"]["assignments"]["assignments"][0]["value"] = draft
        if node["type"].endswith("mcpClient"):
            node["parameters"]["endpointUrl"] = BRIDGE
    with tempfile.TemporaryDirectory(prefix="n8n-") as home:
        env = {**os.environ, "N8N_USER_FOLDER": home, "N8N_DIAGNOSTICS_ENABLED": "false",
               "N8N_RUNNERS_ENABLED": "false", "N8N_ENCRYPTION_KEY": "smoke-test-only"}
        creds = [{"id": "facturacionMcpKey", "name": "Facturación MCP (llave de API)", "type": "httpBearerAuth",
                  "data": {"token": key}}]
        (Path(home) / "creds.json").write_text(json.dumps(creds))
        (Path(home) / "wf.json").write_text(json.dumps(workflow))
        for args in (["import:credentials", f"--input={home}/creds.json"], ["import:workflow", f"--input={home}/wf.json"]):
            subprocess.run([N8N, *args], env=env, check=True)
        out = subprocess.run([N8N, "execute", f"--id={workflow['id']}", "--rawOutput"], env=env,
                             capture_output=True, text=True, timeout=300)
    print(out.stdout[-3000:])
    if out.returncode != 0 or '"STAMPED"' not in out.stdout:
        sys.exit(f"n8n run did not stamp the invoice {draft}:\n{out.stderr[-3000:]}")
    print(f"ok: invoice {draft} STAMPED through n8n → MCP bridge → gateway")


if __name__ == "__main__":
    main()
