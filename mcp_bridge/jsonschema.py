"""JSON Schema for a tool's input, generated from its operation's variables and the supergraph.

What n8n's MCP Client Tool node and LLM function calling read well: one flat `object` per input
type, nested inputs inlined (no `$ref`, no `anyOf`/`oneOf`), GraphQL enums and SAT catalogs as
JSON `enum`s, `required` from GraphQL non-null without a default, and the GraphQL descriptions
carried over (the agent decides from them).
"""

from __future__ import annotations

from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    VariableNode,
    parse,
    type_from_ast,
    value_from_ast,
)
from graphql.language import FieldNode
from graphql.pyutils import Undefined

# Custom scalars of the supergraph, as JSON sees them.
_SCALARS: dict[str, dict[str, Any]] = {
    "String": {"type": "string"},
    "ID": {"type": "string"},
    "Int": {"type": "integer"},
    "Float": {"type": "number"},
    "Boolean": {"type": "boolean"},
    "Decimal": {"type": "string", "pattern": r"^-?\d+(\.\d+)?$",
                "description": "Cantidad decimal como texto (p. ej. \"1500.00\"); nunca un número flotante."},
    "DateTime": {"type": "string", "format": "date-time"},
    "Date": {"type": "string", "format": "date"},
    "JSON": {"type": "object"},
}
# Input types that contain themselves are cut at this depth (an agent never needs more).
_MAX_DEPTH = 6


def _join(*parts: str | None) -> str | None:
    text = " ".join(p.strip() for p in parts if p and p.strip())
    return text or None


class SchemaBuilder:
    """Turns GraphQL input types into inlined JSON Schema, enriching SAT-coded strings.

    `catalogs` maps an input field or argument name (e.g. `paymentForm`) to the codes SAT accepts
    for it and a short label per code; those strings become JSON enums.
    """

    def __init__(self, schema: GraphQLSchema, catalogs: dict[str, dict[str, str]] | None = None):
        self.schema = schema
        self.catalogs = catalogs or {}

    def for_type(self, gtype, name: str | None = None, description: str | None = None, depth: int = 0) -> dict:
        if isinstance(gtype, GraphQLNonNull):
            return self.for_type(gtype.of_type, name, description, depth)
        if isinstance(gtype, GraphQLList):
            out: dict[str, Any] = {"type": "array", "items": self.for_type(gtype.of_type, name, None, depth)}
        elif isinstance(gtype, GraphQLEnumType):
            values = list(gtype.values)
            labels = [f"{v}: {gtype.values[v].description}" for v in values if gtype.values[v].description]
            out = {"type": "string", "enum": values}
            description = _join(description, gtype.description, "; ".join(labels) if labels else None)
        elif isinstance(gtype, GraphQLInputObjectType):
            out = self._object(gtype, depth)
            description = _join(description, gtype.description)
        elif isinstance(gtype, GraphQLScalarType):
            out = dict(_SCALARS.get(gtype.name, {"type": "string"}))
            scalar_desc = out.pop("description", None)
            catalog = self.catalogs.get(name or "")
            if catalog and out.get("type") == "string":
                out["enum"] = list(catalog)
                shown = "; ".join(f"{code}: {label}" for code, label in list(catalog.items())[:60])
                description = _join(description, f"Valores del catálogo del SAT: {shown}.")
            description = _join(description, scalar_desc)
        else:  # pragma: no cover - output types never appear in variables
            out = {}
        if description:
            out["description"] = description
        return out

    def _object(self, gtype: GraphQLInputObjectType, depth: int) -> dict:
        if depth >= _MAX_DEPTH:
            return {"type": "object", "description": "(estructura anidada omitida)"}
        props, required = {}, []
        for fname, f in gtype.fields.items():
            prop = self.for_type(f.type, fname, f.description, depth + 1)
            if f.default_value is not Undefined and f.default_value is not None and _jsonable(f.default_value):
                prop["default"] = _enum_name(f.default_value)
            props[fname] = prop
            if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined:
                required.append(fname)
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out

    def for_operation(self, document: str, extra_descriptions: dict[str, str] | None = None) -> dict:
        """The input schema of one operation: one property per variable."""
        doc = parse(document)
        op = next(d for d in doc.definitions if isinstance(d, OperationDefinitionNode))
        arg_info = _argument_info(self.schema, doc)
        props, required = {}, []
        for var in op.variable_definitions:
            vname = var.variable.name.value
            gtype = type_from_ast(self.schema, var.type)
            if gtype is None:
                raise ValueError(f"unknown type for ${vname}")
            arg_name, arg_desc = arg_info.get(vname, (vname, None))
            desc = (extra_descriptions or {}).get(vname) or arg_desc
            prop = self.for_type(gtype, arg_name, desc)
            if var.default_value is not None:
                default = value_from_ast(var.default_value, gtype)
                if _jsonable(default):
                    prop["default"] = _enum_name(default)
            elif isinstance(gtype, GraphQLNonNull):
                required.append(vname)
            props[vname] = prop
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out


def _argument_info(schema: GraphQLSchema, doc) -> dict[str, tuple[str, str | None]]:
    """variable name → (the argument it feeds, that argument's description), for top-level uses."""
    info: dict[str, tuple[str, str | None]] = {}
    roots = {"query": schema.query_type, "mutation": schema.mutation_type}
    op = next(d for d in doc.definitions if isinstance(d, OperationDefinitionNode))
    root = roots.get(op.operation.value)
    if root is None:
        return info

    for sel in op.selection_set.selections:
        if not isinstance(sel, FieldNode) or (field := root.fields.get(sel.name.value)) is None:
            continue
        for arg in sel.arguments or ():
            if isinstance(arg.value, VariableNode):
                gql_arg = field.args.get(arg.name.value)
                info.setdefault(arg.value.name.value, (arg.name.value, gql_arg.description if gql_arg else None))
    return info


def _enum_name(value):
    return value.name if hasattr(value, "name") and not isinstance(value, str) else value


def _jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, list, dict)) or hasattr(value, "name")


def walk(schema: dict):
    """Every sub-schema of a generated schema (for checks: no $ref, enums present)."""
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from walk(sub)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"])
