"""The tool catalogue: named GraphQL operations in `schema/operations/` marked for MCP.

A file becomes a tool when it starts with a comment header, e.g.

    # mcp-tool: invoice_stamp
    # mcp-description: Timbra una factura en borrador ante el PAC (SAT).
    # mcp-permissions: invoice:issue
    # mcp-kind: destructive
    mutation StampInvoice($id: ID!, $idempotencyKey: String!) { ... }

Keys: `mcp-tool` (required, the tool name), `mcp-description` (repeatable, joined), `mcp-permissions`
(comma-separated, what the API key must grant), `mcp-kind` (`read` for queries; `write` or
`destructive` for mutations), `mcp-exposure` (`curated`, the default, or `extended`: only with
`MCP_MUTATIONS=all`), `mcp-result` (the dotted path of the payload returned to the agent),
`mcp-arg` (`name: description`, overrides the description of one variable).

The headers are comments, so the persisted-document hashes (graphql-js `print`) do not change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from graphql import OperationDefinitionNode, OperationType, parse

OPERATIONS_DIR = Path(__file__).resolve().parent.parent / "schema" / "operations"
_HEADER = re.compile(r"^#\s*(mcp-[a-z]+)\s*:\s*(.*?)\s*$")
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
KINDS = ("read", "write", "destructive")


class OperationFileError(ValueError):
    """A marked operation file whose header or document is unusable (fails the bridge's start)."""


@dataclass(frozen=True)
class ToolOperation:
    tool: str
    description: str
    document: str
    operation_name: str
    operation_type: OperationType
    permissions: tuple[str, ...]
    kind: str
    exposure: str
    result_path: tuple[str, ...]
    arg_descriptions: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def is_mutation(self) -> bool:
        return self.operation_type is OperationType.MUTATION


def parse_operation_file(path: Path) -> ToolOperation | None:
    text = path.read_text(encoding="utf-8")
    headers: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        m = _HEADER.match(stripped)
        if m:
            headers.setdefault(m.group(1), []).append(m.group(2))
    if "mcp-tool" not in headers:
        return None
    where = path.name
    tool = headers["mcp-tool"][0]
    if not _TOOL_NAME.match(tool):
        raise OperationFileError(f"{where}: invalid tool name {tool!r}")
    try:
        doc = parse(text)
    except Exception as exc:  # graphql-core raises GraphQLSyntaxError
        raise OperationFileError(f"{where}: {exc}") from exc
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if len(ops) != 1 or ops[0].name is None:
        raise OperationFileError(f"{where}: exactly one named operation per tool file")
    op = ops[0]
    if op.operation is OperationType.SUBSCRIPTION:
        raise OperationFileError(f"{where}: subscriptions cannot be tools")
    kind = (headers.get("mcp-kind") or ["read" if op.operation is OperationType.QUERY else "write"])[0]
    if kind not in KINDS or (kind == "read") != (op.operation is OperationType.QUERY):
        raise OperationFileError(f"{where}: mcp-kind {kind!r} does not fit a {op.operation.value}")
    exposure = (headers.get("mcp-exposure") or ["curated"])[0]
    if exposure not in ("curated", "extended"):
        raise OperationFileError(f"{where}: mcp-exposure must be curated or extended")
    description = " ".join(headers.get("mcp-description", [])).strip()
    if not description:
        raise OperationFileError(f"{where}: mcp-description is required (an agent reads it)")
    arg_descriptions = {}
    for item in headers.get("mcp-arg", []):
        name, _, desc = item.partition(":")
        arg_descriptions[name.strip()] = desc.strip()
    permissions = tuple(p.strip() for p in ",".join(headers.get("mcp-permissions", [])).split(",") if p.strip())
    result = (headers.get("mcp-result") or [""])[0]
    return ToolOperation(
        tool=tool,
        description=description,
        document=text,
        operation_name=op.name.value,
        operation_type=op.operation,
        permissions=permissions,
        kind=kind,
        exposure=exposure,
        result_path=tuple(p for p in result.split(".") if p),
        arg_descriptions=arg_descriptions,
        source=where,
    )


def load_tool_operations(directory: Path = OPERATIONS_DIR) -> list[ToolOperation]:
    tools: dict[str, ToolOperation] = {}
    for path in sorted(directory.glob("*.graphql")):
        op = parse_operation_file(path)
        if op is None:
            continue
        if op.tool in tools:
            raise OperationFileError(f"{path.name}: tool {op.tool!r} already defined in {tools[op.tool].source}")
        tools[op.tool] = op
    return list(tools.values())


def exposed(ops: list[ToolOperation], mutations: str) -> list[ToolOperation]:
    """What `MCP_MUTATIONS` lets through: queries always; mutations by their exposure."""
    allowed = {"none": (), "curated": ("curated",), "all": ("curated", "extended")}[mutations]
    return [op for op in ops if not op.is_mutation or op.exposure in allowed]
