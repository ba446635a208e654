"""A compiled execution path for the documents a subgraph sees again and again.

A dashboard list is ~600 fields per request, and almost all of them are attributes of an object the
resolver already built (`Invoice.folio`, `Customer.rfc`, `Edge.cursor`), serialized as a scalar or
an enum. graphql-core executes each one generically: a `Path`, a `GraphQLResolveInfo` (Strawberry's,
with 15 slots), the middleware and argument checks, the resolver wrapper, then `complete_value`'s
type dispatch. Here each selection set of a known document is compiled once into a plan: per
field, either a direct getter plus the scalar's own serializer (`coerce_output_value`) with the
null check of a non-null type, or "generic" (anything with a resolver, arguments, a list, an
object, an abstract type), which runs graphql-core's own `execute_field`. So everything with
behaviour (resolvers, DataLoaders, argument conversion, field extensions, abstract types, lists)
still runs through the generic executor, and errors and null propagation go through the same
`handle_field_error`: the JSON is the same, errors included (tests/test_compiled.py on a schema
built to fail, tests/invoice/test_compiled_execution.py on every persisted invoice query and
random valid queries: both paths, compared).

Which documents: a query document is compiled on its `COMPILE_AFTER`-th sight (by its exact
text, which is what the gateway's planner sends a subgraph: always the same text for the same
client operation). A document seen once (a one-off, a probe) costs nothing extra. Every cache is
bounded: the sighting counter and the plans are LRUs.

Not compiled (the generic executor runs): mutations and subscriptions (mutations are dominated by
their own work), documents seen fewer than `COMPILE_AFTER` times, schemas with custom operation
directives (they run as resolver middleware). Schema extensions implementing `resolve` (field
middleware) are not supported: `shared.graphql.schema_extensions` has none, keep it so.
`GRAPHQL_COMPILED=never` turns the compiled path off.
"""

from __future__ import annotations

import contextvars
import operator
import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import (
    GraphQLObjectType, get_nullable_type, is_leaf_type, is_non_null_type, is_object_type,
)
from graphql.execution import execute
from graphql.pyutils import Path, Undefined
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

COMPILE_AFTER = 2  # sightings of a document before it takes the compiled path
MAX_DOCUMENTS = 1024  # distinct document texts counted
MAX_PLANS = 4096  # compiled selection sets kept (a document has a handful)
_BACKREF = "strawberry-definition"
_PREFETCHED = "compiled.prefetched_attribute"
_GENERIC = object()  # a prefetched attribute that is not there: the field's resolver runs


def prefetched(attribute: str) -> dict:
    """Field metadata for a resolver field whose value a batch may have set beforehand in the
    source object's `attribute` (and whose resolver returns that value when it is there): the
    compiled path then reads it directly, and runs the resolver only when it is absent."""
    return {_PREFETCHED: attribute}


def _prefetched_getter(attribute: str):
    def get(source):
        return getattr(source, "__dict__", {}).get(attribute, _GENERIC)
    return get

# "auto": known documents only; "always" / "never": tests comparing both paths. GRAPHQL_COMPILED=never
# turns the compiled path off for a process (a kill switch, and the bench's comparison).
mode: contextvars.ContextVar[str] = contextvars.ContextVar(
    "compiled_execution_mode", default="never" if os.environ.get("GRAPHQL_COMPILED") == "never" else "auto")


class _LRU(OrderedDict):
    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get(self, key, default=None):
        value = super().get(key, default)
        if value is not default:
            self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.maxsize:
            self.popitem(last=False)


_sightings: _LRU = _LRU(MAX_DOCUMENTS)
_plans: _LRU = _LRU(MAX_PLANS)
stats = {"compiled": 0, "generic": 0}  # executions per path, for tests and curiosity


def _fast_field(parent_type: GraphQLObjectType, field_details_list) -> tuple | None:
    """(getter, leaf type or None, object type or None, return type, non-null, null message) for
    a field that only reads an attribute and is a scalar, an enum or a plain object, or None when
    the field needs the generic executor."""
    node = field_details_list[0].node
    if node.arguments or any(fd.node.directives for fd in field_details_list):
        return None
    field_def = parent_type.fields.get(node.name.value)
    if field_def is None or field_def.args:
        return None
    resolve = field_def.resolve
    definition = (field_def.extensions or {}).get(_BACKREF)
    attribute = (getattr(definition, "metadata", None) or {}).get(_PREFETCHED)
    if attribute:
        getter = _prefetched_getter(attribute)
    # Strawberry's resolver for a field with no resolver, no extensions, no permissions: it calls
    # `field.default_resolver(source, python_name)` and nothing else (schema_converter.py).
    elif (resolve is None or getattr(resolve, "__name__", "") != "_get_basic_result"
            or definition is None or getattr(definition, "default_resolver", None) is not getattr):
        return None
    else:
        getter = operator.attrgetter(definition.python_name)
    return_type = field_def.type
    named = get_nullable_type(return_type)
    leaf = named if is_leaf_type(named) else None
    # An object type without `is_type_of`: completing it is exactly executing its selection set.
    obj = named if is_object_type(named) and named.is_type_of is None else None
    if leaf is None and obj is None:
        return None
    message = f"Cannot return null for non-nullable field {parent_type.name}.{node.name.value}."
    return getter, leaf, obj, return_type, is_non_null_type(return_type), message


def _compile(parent_type: GraphQLObjectType, grouped_field_set) -> list[tuple]:
    return [(name, fdl, _fast_field(parent_type, fdl)) for name, fdl in grouped_field_set.items()]


class CompiledExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor (Strawberry's flavour) whose `execute_fields` follows a compiled
    plan: attribute-read leaves inline, everything else through `execute_field` as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_plans: dict[int, tuple[Any, list[tuple]]] = {}

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set) -> list[tuple]:
        # Per request by identity, keeping the grouped field set alive beside its plan (as
        # graphql-core's own memo does): the root's is dropped once its resolvers are running, and
        # a later one reusing its id must not find the root's plan. Across requests by the
        # identity of the cached document's field nodes, which the plan keeps alive too.
        memo = self._request_plans.get(id(grouped_field_set))
        if memo is not None and memo[0] is grouped_field_set:
            return memo[1]
        key = (id(self.schema), parent_type.name,
               tuple((name, *(id(fd.node) for fd in fdl)) for name, fdl in grouped_field_set.items()))
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = _compile(parent_type, grouped_field_set)
        self._request_plans[id(grouped_field_set)] = (grouped_field_set, plan)
        return plan

    def execute_fields(self, parent_type, source_value, path, grouped_field_set, position_context):
        # Mirrors graphql-core's `Executor.execute_fields` (same order of resolution, same error
        # handling), with the fast leaves inlined.
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, fdl, fast in self._plan(parent_type, grouped_field_set):
                if fast is not None:
                    getter, leaf, obj, return_type, non_null, message = fast
                    try:
                        value = getter(source_value)
                        if value is _GENERIC:
                            pass
                        elif isinstance(value, Exception):
                            raise value
                        elif value is None or value is Undefined:
                            if non_null:
                                raise TypeError(message)
                            results[response_name] = None
                        elif leaf is not None:
                            coerced = leaf.coerce_output_value(value)
                            if coerced is None or coerced is Undefined:  # graphql-core's error, its words
                                coerced = self.complete_leaf_value(leaf, value)
                            results[response_name] = coerced
                        else:
                            field_path = Path(path, response_name, parent_type.name)
                            completed = self.collect_and_execute_subfields(obj, fdl, field_path, value,
                                                                           position_context)
                            if is_awaitable(completed):
                                completed = self._await_completed(completed, return_type, fdl, field_path)
                                awaitable_fields.append(response_name)
                            results[response_name] = completed
                    except Exception as raw_error:  # noqa: BLE001 - located and collected as graphql-core does
                        self.handle_field_error(raw_error, return_type, fdl,
                                                Path(path, response_name, parent_type.name))
                        results[response_name] = None
                        continue
                    if value is not _GENERIC:
                        continue
                result = self.execute_field(parent_type, source_value, fdl,
                                            Path(path, response_name, parent_type.name), position_context)
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[f] for f in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return _gather(results, awaitable_fields)

    async def _await_completed(self, completed, return_type, fdl, path) -> Any:
        # As graphql-core's `execute_field` does for a completion that turned out awaitable.
        try:
            return await completed
        except Exception as raw_error:  # noqa: BLE001
            self.handle_field_error(raw_error, return_type, fdl, path)
            return None


async def _gather(results: dict, awaitable_fields: list[str]) -> dict:
    from graphql.pyutils import gather_with_cancel

    if len(awaitable_fields) == 1:
        field = awaitable_fields[0]
        results[field] = await results[field]
    else:
        awaited = await gather_with_cancel(*(results[f] for f in awaitable_fields))
        results.update(zip(awaitable_fields, awaited, strict=True))
    return results


def _should_compile(query: str | None) -> bool:
    chosen = mode.get()
    if chosen != "auto":
        return chosen == "always"
    if not query:
        return False
    # By hash, not text: 1024 documents of up to 5000 tokens would be megabytes. A collision only
    # compiles a document a sighting early, and both paths answer the same.
    key = hash(query)
    seen = _sightings.get(key, 0) + 1
    _sightings[key] = seen
    return seen >= COMPILE_AFTER


class CompiledExecution(SchemaExtension):
    """Runs known query documents with `CompiledExecutor`; Strawberry skips its own execution
    when an extension has set the result, and error processing/masking then run as usual."""

    async def on_execute(self) -> Iterator[None]:  # type: ignore[override]
        ec = self.execution_context
        # Custom operation directives run as resolver middleware, which the compiled path skips.
        if (ec.result is None and not ec.schema.directives and getattr(ec.operation_type, "value", None) == "query"
                and _should_compile(ec.query)):
            schema = ec.schema
            result = execute(
                schema._schema, ec.graphql_document, root_value=ec.root_value, context_value=ec.context,
                variable_values=ec.variables, operation_name=ec.operation_name, is_awaitable=optimized_is_awaitable,
                executor_class=CompiledExecutor, operation_extensions=ec.operation_extensions,
            )
            if optimized_is_awaitable(result):
                result = await result
            ec.result = result
            stats["compiled"] += 1
        else:
            stats["generic"] += 1
        yield
