"""Differential testing of the compiled execution path (shared/compiled.py): the same request on
both paths must give the same JSON, errors included."""

from __future__ import annotations

from pathlib import Path

from graphql import (
    REMOVE, FieldNode, NameNode, OperationDefinitionNode, OperationType, SelectionSetNode, TypeInfo, TypeInfoVisitor,
    Visitor, parse, print_ast, validate, visit,
)

from shared import compiled

OPERATIONS = Path(__file__).resolve().parents[1] / "schema" / "operations"


def _project(schema, doc):
    """The part of a client document one subgraph answers, roughly as the gateway's planner cuts
    it: fields the subgraph does not define are dropped, and a selection left empty asks for
    `__typename` (the planner adds the entity's key fields there)."""
    type_info = TypeInfo(schema._schema)

    class Project(Visitor):
        def enter_field(self, node, *_):
            return REMOVE if type_info.get_field_def() is None else None

        def leave_selection_set(self, node, *_):
            if not node.selections:
                return SelectionSetNode(selections=(FieldNode(name=NameNode(value="__typename")),))
            return None

    return visit(doc, TypeInfoVisitor(type_info, Project()))


def persisted_queries(schema) -> list[tuple[str, str, set[str]]]:
    """(name, document, variable names) of each persisted query with a part this subgraph answers:
    the document itself when it validates against the subgraph's schema, else its projection
    (`_project`) when that validates."""
    found = []
    for path in sorted(OPERATIONS.glob("*.graphql")):
        doc = parse(path.read_text())
        ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
        if not ops or any(o.operation != OperationType.QUERY for o in ops):
            continue
        if validate(schema._schema, doc):
            doc = _project(schema, doc)
            if validate(schema._schema, doc):
                continue
        found.append((path.stem, print_ast(doc), {v.variable.name.value for o in ops for v in o.variable_definitions or ()}))
    return found


async def both_paths(execute, query: str, variables: dict | None = None) -> tuple[dict, dict]:
    """`execute(query, variables)` (a client's Result) on the generic path, then the compiled one."""
    out = []
    for mode in ("never", "always"):
        token = compiled.mode.set(mode)
        try:
            r = await execute(query, variables or {})
        finally:
            compiled.mode.reset(token)
        out.append({"data": r.data, "errors": r.errors})
    return out[0], out[1]


async def assert_persisted_queries_match(schema, execute, variable_sets: list[dict]) -> list[str]:
    """Every persisted query of `schema` with each variable set (unused names dropped); returns
    the operation names checked."""
    names = []
    for name, text, wanted in persisted_queries(schema):
        for variables in variable_sets:
            generic, fast = await both_paths(execute, text, {k: v for k, v in variables.items() if k in wanted})
            assert generic == fast, (name, variables, generic, fast)
        names.append(name)
    return names
