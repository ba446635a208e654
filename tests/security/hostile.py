"""The hostile-input sweep's generator: every argument of every root field of a subgraph, down
into input objects, paired with hostile values chosen by the argument's type.

Values are sampled, not multiplied: the first time an input field is met it gets the full list for
its type, later places the same input type appears (e.g. `ConceptInput` in both `createInvoice`
and `updateInvoice`) get one probe, since the boundary that answers them is the same code.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from graphql import (
    GraphQLEnumType, GraphQLField, GraphQLInputObjectType, GraphQLInputType, GraphQLList, GraphQLNonNull,
    GraphQLObjectType, GraphQLScalarType, GraphQLSchema, GraphQLUnionType, get_named_type, is_leaf_type,
)
from strawberry.schema.schema_converter import GraphQLCoreConverter

from shared.validation import DEFAULT_MAX_ITEMS, Limits, limits_of

BACKREF = GraphQLCoreConverter.DEFINITION_BACKREF


class Raw:
    """A JSON number written as-is into the request body (e.g. 1e400, which json.dumps cannot)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Hostile:
    label: str
    value: Any
    must_refuse: bool  # True: an answer without errors/userErrors is a failure too


def _cursor(obj: Any) -> str:
    raw = obj if isinstance(obj, str) else json.dumps(obj)
    return base64.urlsafe_b64encode(raw.encode()).decode()


def text_values(lim: Limits, name: str) -> list[Hostile]:
    out = [
        Hostile("NUL", "a\x00b", True),
        Hostile("lone surrogate", "a\ud800b", True),
        Hostile("100 KB", "x" * 100_000, True),
        Hostile("escape sequence", "\x1b[2J", True),
        Hostile("CR/LF", "Ana\r\nBcc: intruso@example.com", not lim.multiline),
        Hostile("all digits", "9" * 40, False),
        Hostile("unicode digits", "²³", False),
        # Exactly the declared (or default) maximum: must be storable, so it catches columns
        # shorter than what the field lets through.
        Hostile(f"{lim.max_length} chars", "x" * lim.max_length, False),
    ]
    if name in ("after", "before"):
        out += [
            Hostile("deep cursor", _cursor("[" * 50_000 + "]" * 50_000), True),
            Hostile("huge cursor", _cursor(list(range(20_000))), True),
            Hostile("nested cursor", _cursor([[["x"]], {"a": 1}]), True),
            Hostile("garbage cursor", "%%%%", True),
        ]
    return out


INT_VALUES = [
    Hostile("-1", -1, False), Hostile("0", 0, False), Hostile("2^31-1", 2**31 - 1, False),
    Hostile("-2^31", -(2**31), False), Hostile("2^63", 2**63, True), Hostile("1e400", Raw("1e400"), True),
]
DECIMAL_VALUES = [
    Hostile("1e400", "1e400", True), Hostile("-1e400", "-1e400", True), Hostile("NaN", "NaN", True),
    Hostile("Infinity", "Infinity", True), Hostile("1e-400", "1e-400", True), Hostile("40 nines", "9" * 40, True),
    Hostile("column max", "999999999999.999999", False), Hostile("-1", "-1", False),
    Hostile("raw 1e400", Raw("1e400"), True),
]
DATETIME_VALUES = [
    Hostile("year 1", "0001-01-01T00:00:00+14:00", False),
    Hostile("year 9999", "9999-12-31T23:59:59-12:00", False),
    Hostile("year 10000", "+10000-01-01T00:00:00", True),
    Hostile("month 13", "2024-13-45T00:00:00", True),
    Hostile("empty", "", True),
]
ENUM_VALUES = [Hostile("unknown member", "NOPE", True)]


def scalar_values(type_: GraphQLScalarType | GraphQLEnumType, lim: Limits, name: str) -> list[Hostile]:
    if isinstance(type_, GraphQLEnumType):
        return ENUM_VALUES
    return {
        "String": lambda: text_values(lim, name), "ID": lambda: text_values(lim, name),
        "Int": lambda: INT_VALUES, "Float": lambda: INT_VALUES, "Decimal": lambda: DECIMAL_VALUES,
        "DateTime": lambda: DATETIME_VALUES, "Boolean": lambda: [], "Date": lambda: [Hostile(h.label, h.value[:10], h.must_refuse) for h in DATETIME_VALUES],
    }.get(type_.name, lambda: text_values(lim, name))()


# --- valid values to fill the arguments that are not under attack -------------------------------

def valid(type_: Any, known: dict[str, Any]) -> Any:
    """A plausible value of `type_`: the service's known-good example for an input type when it has
    one, else only the required fields filled generically."""
    if isinstance(type_, GraphQLNonNull):
        return valid(type_.of_type, known)
    if isinstance(type_, GraphQLList):
        return [valid(type_.of_type, known)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        if type_.name in known:
            return copy.deepcopy(known[type_.name])
        return {n: valid(f.type, known) for n, f in type_.fields.items() if isinstance(f.type, GraphQLNonNull)}
    return {"Int": 1, "Float": 1.0, "Boolean": False, "Decimal": "1", "ID": str(uuid.uuid4()),
            "DateTime": datetime.now(timezone.utc).isoformat(), "Date": datetime.now(timezone.utc).date().isoformat(),
            }.get(type_.name, "A")


def with_value(type_: Any, base: Any, path: list, value: Any, known: dict[str, Any]) -> Any:
    """`base` (a valid value of `type_`) with the value at `path` replaced, building what is missing."""
    if isinstance(type_, GraphQLNonNull):
        return with_value(type_.of_type, base, path, value, known)
    if not path:
        if isinstance(value, tuple) and value and value[0] == "__many__":
            return [base[0] if base else valid(type_.of_type, known)] * value[1]
        return value
    if isinstance(type_, GraphQLList):
        items = list(base) if isinstance(base, list) and base else [valid(type_.of_type, known)]
        items[0] = with_value(type_.of_type, items[0], path[1:], value, known)
        return items
    fields = type_.fields
    obj = dict(base) if isinstance(base, dict) else valid(type_, known)
    name = path[0]
    current = obj[name] if name in obj else valid(fields[name].type, known)
    obj[name] = with_value(fields[name].type, current, path[1:], value, known)
    return obj


# --- cases ----------------------------------------------------------------------------------------

@dataclass
class Case:
    operation: str  # "query" | "mutation"
    field: str
    path: list[str | int]  # argument name, then input field names / list indexes
    hostile: Hostile
    variables: dict[str, Any] = field(default_factory=dict)
    document: str = ""

    @property
    def where(self) -> str:
        return f"{self.field}({'.'.join(map(str, self.path))}) ← {self.hostile.label}"


def _limits(definition: Any) -> Limits:
    backref = (getattr(definition, "extensions", None) or {}).get(BACKREF)
    return limits_of(getattr(backref, "metadata", None))


def _selection(type_: Any, schema: GraphQLSchema) -> str:
    named = get_named_type(type_)
    if isinstance(named, GraphQLUnionType):
        return "{ __typename }"
    if not isinstance(named, GraphQLObjectType):
        return ""
    parts = ["__typename"]
    for name, f in named.fields.items():
        if name == "userErrors":
            parts.append("userErrors { field code message }")
        elif is_leaf_type(get_named_type(f.type)) and not any(isinstance(a.type, GraphQLNonNull) for a in f.args.values()):
            parts.append(name)
    return "{ " + " ".join(parts) + " }"


def _document(operation: str, field_name: str, field_def: GraphQLField, schema: GraphQLSchema) -> str:
    var_defs = ", ".join(f"${n}: {a.type}" for n, a in field_def.args.items())
    args = ", ".join(f"{n}: ${n}" for n in field_def.args)
    head = f"{operation}({var_defs})" if var_defs else operation
    call = f"{field_name}({args})" if args else field_name
    return f"{head} {{ {call} {_selection(field_def.type, schema)} }}"


def _leaves(type_: Any, lim: Limits, name: str, path: list, seen: set, probe_only: bool):
    """(path, hostile) pairs inside a value of `type_`, and a huge list wherever a list is."""
    if isinstance(type_, GraphQLNonNull):
        yield from _leaves(type_.of_type, lim, name, path, seen, probe_only)
        return
    if isinstance(type_, GraphQLList):
        inner = type_.of_type.of_type if isinstance(type_.of_type, GraphQLNonNull) else type_.of_type
        big = 33_000 if is_leaf_type(inner) else DEFAULT_MAX_ITEMS + 1
        if not probe_only:
            yield path, Hostile(f"{big} items", ("__many__", big), True)
        yield from _leaves(type_.of_type, lim, name, [*path, 0], seen, probe_only)
        return
    if isinstance(type_, GraphQLInputObjectType):
        for fname, f in type_.fields.items():
            key = (type_.name, fname)
            again = key in seen
            seen.add(key)
            yield from _leaves(f.type, _limits(f), fname, [*path, fname], seen, probe_only or again)
        return
    if type_.name == "_Any":
        return  # federation representations get their own cases (see `entity_cases`)
    values = scalar_values(type_, lim, name)
    yield from ((path, h) for h in (values[:1] if probe_only else values))


def cases(schema: GraphQLSchema, known: dict[str, Any]) -> list[Case]:
    out: list[Case] = []
    seen: set = set()
    for operation, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        if root is None:
            continue
        for fname, fdef in root.fields.items():
            if fname in ("_service", "_entities"):
                continue
            doc = _document(operation, fname, fdef, schema)
            required = {a: copy.deepcopy(known[f"{fname}.{a}"]) if f"{fname}.{a}" in known else valid(arg.type, known)
                        for a, arg in fdef.args.items() if isinstance(arg.type, GraphQLNonNull)}
            for aname, arg in fdef.args.items():
                for path, hostile in _leaves(arg.type, _limits(arg), aname, [aname], seen, False):
                    base = required.get(aname, valid(arg.type, known))
                    variables = {**required, aname: with_value(arg.type, base, path[1:], hostile.value, known)}
                    out.append(Case(operation, fname, path, hostile, variables, doc))
    return out


def entity_cases(schema: GraphQLSchema) -> list[Case]:
    """Forged `_entities` representations, as anyone reaching a subgraph directly could send."""
    entity = schema.get_type("_Entity")
    if entity is None:
        return []
    doc = "query($r: [_Any!]!) { _entities(representations: $r) { __typename } }"
    out = []
    for t in entity.types:
        for h in text_values(Limits(), "id"):
            out.append(Case("query", "_entities", [t.name, "id"], h, {"r": [{"__typename": t.name, "id": h.value}]}, doc))
    forged = [("no __typename", [{"id": str(uuid.uuid4())}]), ("unknown type", [{"__typename": "Nope", "id": "1"}]),
              ("type not a string", [{"__typename": ["Invoice"], "id": "1"}]), ("not an object", ["x"]),
              ("__proto__ type", [{"__typename": "__proto__", "id": "1"}])]
    for label, reps in forged:
        out.append(Case("query", "_entities", ["representations"], Hostile(label, reps, True), {"r": reps}, doc))
    return out


def fill(value: Any, refs: dict[str, str]) -> Any:
    """`value` with "{name}" placeholders replaced by this organization's ids."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in refs:
        return refs[value[1:-1]]
    if isinstance(value, list):
        return [fill(v, refs) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, refs) for k, v in value.items()}
    return value


def body(document: str, variables: dict) -> bytes:
    """The JSON body, with `Raw` numbers spliced in verbatim."""
    raws: dict[str, str] = {}

    def default(o):
        if isinstance(o, Raw):
            key = f"__raw_{len(raws)}__"
            raws[key] = o.text
            return key
        raise TypeError(o)

    text = json.dumps({"query": document, "variables": variables}, default=default)
    for key, raw in raws.items():
        text = text.replace(f'"{key}"', raw)
    return text.encode()
