"""The partial-data contract, checked on the composed supergraph: whatever one subgraph resolves
for a query that another subgraph started is nullable, so a subgraph that is down costs only its
own fields (each with a SUBGRAPH_UNAVAILABLE error), never the whole response.

- every root Query field (one query may touch several subgraphs at its root);
- every field a subgraph adds to an entity owned by another (User.notificationPreferences);
- every field whose value is an entity the resolving subgraph only references (Invoice.organization).
"""

from __future__ import annotations

from collections import Counter

from graphql import GraphQLNonNull, GraphQLObjectType, build_ast_schema, get_named_type, parse
from graphql.language import ObjectTypeDefinitionNode

from tests.stack import ROOT


def _arg(directive, name):
    for a in directive.arguments:
        if a.name.value == name:
            return a.value.value
    return None


def _supergraph():
    doc = parse((ROOT / "schema" / "supergraph.graphql").read_text())
    types = {d.name.value: d for d in doc.definitions if isinstance(d, ObjectTypeDefinitionNode)}
    return build_ast_schema(doc, assume_valid=True), types


def _graphs(node, directive_name):
    return [d for d in node.directives or () if d.name.value == directive_name]


def cross_service_fields():
    """(type.field, is nullable) for every field the contract covers."""
    schema, defs = _supergraph()
    resolvable = {name: {_arg(d, "graph") for d in _graphs(node, "join__type") if _arg(d, "resolvable") is not False}
                  for name, node in defs.items() if any(_arg(d, "key") for d in _graphs(node, "join__type"))}
    out = []
    for name, node in defs.items():
        gtype = schema.get_type(name)
        if not isinstance(gtype, GraphQLObjectType) or name.startswith(("join__", "link__")):
            continue
        type_graphs = [_arg(d, "graph") for d in _graphs(node, "join__type")]
        field_graphs = {f.name.value: [_arg(d, "graph") for d in _graphs(f, "join__field")] or type_graphs
                        for f in node.fields}
        home = Counter(g for gs in field_graphs.values() for g in gs).most_common(1)[0][0] if type_graphs else None
        for f in node.fields:
            field, graphs = gtype.fields[f.name.value], field_graphs[f.name.value]
            target = get_named_type(field.type).name
            covered = (
                name == "Query"
                or (name in resolvable and home not in graphs)  # added to another's entity
                or (target in resolvable and not resolvable[target] & set(graphs))  # a reference it cannot resolve
            )
            if covered:
                out.append((f"{name}.{f.name.value}", not isinstance(field.type, GraphQLNonNull)))
    return out


def test_fields_that_cross_a_service_boundary_are_nullable():
    fields = dict(cross_service_fields())
    # The rule finds the fields this contract is about (a guard against a rule that covers nothing).
    assert {"Query.unreadCount", "Query.me", "Query.invoices", "User.notificationPreferences",
            "Invoice.organization", "Invoice.createdBy"} <= set(fields)
    assert [f for f, nullable in fields.items() if not nullable] == []
