"""The compiled path (shared/compiled.py) answers exactly what the generic executor answers:
data, errors (message, path, locations, code) and null propagation, on a schema built to fail in
every way a field can fail."""

from __future__ import annotations

import asyncio
import json
from enum import Enum

import strawberry
from hypothesis import HealthCheck, given, settings, strategies as st

from shared import compiled


@strawberry.enum
class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Boom(Exception):
    pass


@strawberry.type
class Inner:
    name: str
    must: str  # None on some: the violation nulls the object (nullable parent) or propagates

    @strawberry.field
    async def later(self) -> str:
        await asyncio.sleep(0)
        if self.name == "inner 1":
            raise Boom("inner later 1")
        return self.name


@strawberry.type
class Leafy:
    @strawberry.field(metadata=compiled.prefetched("_pre"))
    async def pre(self) -> Inner | None:
        # As a prefetching resolver does: the prefetched value when there is one, else a load.
        if "_pre" in self.__dict__:
            return self.__dict__["_pre"]
        await asyncio.sleep(0)
        if self.i == 1:
            raise Boom("pre 1")
        return _inner(self.i + 10)

    inner: Inner | None
    inner_required: Inner
    i: int
    name: str
    maybe: str | None
    must: str  # None on odd rows: a non-null violation
    color: Color | None
    broken: str | None
    broken_required: str

    @strawberry.field
    async def later(self) -> str | None:
        await asyncio.sleep(0)
        if self.i == 2:
            raise Boom("later 2")
        return f"later {self.i}"


def _inner(i: int) -> Inner:
    return Inner(name=f"inner {i}", must=None if i == 2 else "ok")


class RaisingLeafy(Leafy):
    @property
    def broken(self):  # noqa: D401
        raise Boom(f"broken {self.i}")

    @broken.setter
    def broken(self, value):
        pass


@strawberry.type
class Query:
    @strawberry.field
    def rows(self, n: int = 4) -> list[Leafy]:
        return [RaisingLeafy(inner=_inner(i) if i != 3 else None, inner_required=_inner(i + 1), i=i, name=f"n{i}", maybe=None if i % 2 else f"m{i}", must=None if i % 2 else f"m{i}",
                             color=Color.RED if i % 3 else "not-a-color", broken=None,
                             broken_required=None if i == 3 else "ok") for i in range(n)]

    @strawberry.field
    def prefetched_rows(self) -> list[Leafy]:
        rows = self.rows(5)
        for r in rows[::2]:
            r.__dict__["_pre"] = _inner(r.i) if r.i != 4 else None
        return rows

    @strawberry.field
    def required_rows(self) -> list[Leafy] | None:
        return self.rows(3)

    @strawberry.field
    def one(self) -> Leafy:
        return RaisingLeafy(inner=_inner(2), inner_required=_inner(0), i=0, name="n0", maybe="m0", must="m0", color=Color.BLUE, broken=None, broken_required="ok")


def _schema():
    from shared.graphql import build_schema

    return build_schema(query=Query)


SCHEMA = _schema()
FIELDS = ["i", "name", "maybe", "must", "color", "broken", "brokenRequired", "later", "__typename",
          "inner { name must }", "inner { later name }", "innerRequired { name }", "innerRequired { must later }",
          "inner { __typename }", "pre { name must later }", "pre { name }"]


async def _both(query: str, variables: dict | None = None) -> tuple[dict, dict]:
    out = []
    for m in ("never", "always"):
        token = compiled.mode.set(m)
        try:
            r = await SCHEMA.execute(query, variable_values=variables)
        finally:
            compiled.mode.reset(token)
        out.append(json.loads(json.dumps({"data": r.data, "errors": [e.formatted for e in r.errors or []]})))
    return out[0], out[1]


async def test_compiled_path_is_taken_and_matches():
    before = compiled.stats["compiled"]
    q = "{ one { i name maybe color __typename } rows(n: 3) { i name } }"
    generic, fast = await _both(q)
    assert generic == fast and not generic["errors"]
    assert compiled.stats["compiled"] == before + 1


async def test_errors_and_null_propagation_match():
    for q in [
        "{ rows { i must } }",  # non-null violation nulls the item, then the non-null list: data.rows null
        "{ requiredRows { i must } one { i } }",
        "{ rows { i broken } }",  # nullable field raising: null + error per row
        "{ rows { i brokenRequired } }",
        "{ rows { color i } }",  # enum serialization failure
        "{ rows { later i name } one { later broken } }",
        "{ a: one { i } b: one { x: name i } one { i } }",
        "{ rows { i inner { name must } } }",
        "{ prefetchedRows { i pre { name must later } } rows { pre { name } } }",
        "{ rows { i innerRequired { must } } }",
        "{ rows { inner { later } innerRequired { later name } } one { innerRequired { later } } }",
    ]:
        generic, fast = await _both(q)
        assert generic == fast, q
    assert (await _both("{ rows { i must } }"))[0]["errors"]


async def test_auto_mode_compiles_on_second_sight():
    q = "{ one { i name } }  # auto-mode"
    before = dict(compiled.stats)
    await SCHEMA.execute(q)
    assert compiled.stats["compiled"] == before["compiled"]
    await SCHEMA.execute(q)
    assert compiled.stats["compiled"] == before["compiled"] + 1


@st.composite
def selections(draw, depth=0):
    fields = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=6))
    parts = []
    for i, f in enumerate(fields):
        alias = draw(st.sampled_from(["", f"a{i}: "]))
        parts.append(alias + f)
    return " ".join(parts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(root=st.sampled_from(["rows", "requiredRows", "one", "rows(n: 7)", "prefetchedRows"]), sel=selections(),
       sel2=st.one_of(st.none(), selections()))
async def test_random_queries_match(root, sel, sel2):
    q = "{ r: %s { %s } %s }" % (root, sel, f"one {{ {sel2} }}" if sel2 else "")
    generic, fast = await _both(q)
    assert generic == fast, q


def test_no_schema_extension_is_field_middleware_beside_the_compiled_path():
    """The compiled path does not run resolver middleware: with it, the shared extensions have none
    (tracing, whose resolver spans are middleware, turns it off)."""
    from shared.graphql import schema_extensions

    extensions = [factory() for factory in schema_extensions()]
    if any(isinstance(e, compiled.CompiledExecution) for e in extensions):
        assert not any(e._implements_resolve() for e in extensions)
