"""Subscriptions fan out without redoing GraphQL per subscriber.

A message reaches every local subscriber of its channel at once (`shared.pubsub`). Executed the
plain way, each subscriber would then run its selection over the event and serialize the result:
1,000 subscribers of one organization cost 1,000 executions and 1,000 `json.dumps` of the same
answer. When a resolver yields a `SharedEvent` (`LiveMessage.event`), this executor runs each
distinct selection (document + operation + variables) once per message, and the view sends the
JSON text of that result, serialized once, to every subscriber that asked for the same selection;
a subscriber's own work is a small `ExecutionResult` copy and its message id.

Safe only because a `SharedEvent`'s fields depend on the message alone, never on `info.context`
(the resolver checked the subscriber's authority before it yielded), and because one message is on
one organization's channel: subscribers of another organization never share its memo.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from graphql import ExecutionResult, print_ast
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.execution import ExecutionResult as StrawberryResult

from shared.pubsub import SharedEvent

_UNSET = object()


class SharedData(dict):
    """A subscription result shared by many subscribers: read-only by convention; its JSON text is
    computed once, on first send, and reused for every subscriber's `next` message."""

    __slots__ = ("_text",)

    @property
    def json_text(self) -> str:
        try:
            return self._text
        except AttributeError:
            self._text = json.dumps(self, separators=(",", ":"))
            return self._text


def next_message_text(message: object) -> str | None:
    """The graphql-transport-ws `next` frame for a shared result, built around its cached JSON
    (the only per-subscriber part is the operation id); None for any other message."""
    if type(message) is not dict or message.get("type") != "next":
        return None
    payload = message.get("payload")
    if type(payload) is not dict or len(payload) != 1:
        return None  # errors or extensions: serialized the ordinary way
    data = payload.get("data")
    if not isinstance(data, SharedData):
        return None
    return f'{{"id":{json.dumps(message["id"])},"type":"next","payload":{{"data":{data.json_text}}}}}'


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core executor: a `SharedEvent` is executed once per message and selection."""

    _selection: Any = _UNSET

    def build_per_event_executor(self, payload: Any):
        if not isinstance(payload, SharedEvent):
            return super().build_per_event_executor(payload)
        if self._selection is _UNSET:  # once per subscription, not per event
            self._selection = self._selection_key()
        # No copy of this executor per subscriber and event (graphql-core's way): only the first
        # subscriber of a message and selection builds one, inside `_SharedRun`.
        return _SharedRun(self, payload)

    def _selection_key(self) -> Any:
        op = self.operation
        document = op.loc.source.body if op.loc is not None else print_ast(op)
        name = op.name.value if op.name is not None else None
        variables = json.dumps(self.variable_values, sort_keys=True, separators=(",", ":"), default=str)
        return ("graphql-selection", document, name, variables)

    def _execute_once(self, event: SharedEvent, serially: bool | None):
        result = super().build_per_event_executor(event.value).execute_operation(serially)
        if self.is_awaitable(result):
            # Some resolver of the selection is async: every subscriber awaits the same task.
            return asyncio.ensure_future(_frozen_when_done(result))
        return _frozen(result)


class _SharedRun:
    """What graphql-core runs for one subscriber and one shared event: the memoized execution."""

    __slots__ = ("executor", "event")

    def __init__(self, executor: SharedEventExecutor, event: SharedEvent):
        self.executor, self.event = executor, event

    def execute_operation(self, serially: bool | None = None):
        ex, event = self.executor, self.event
        shared = event.message.shared(ex._selection, lambda _data: ex._execute_once(event, serially))
        if isinstance(shared, asyncio.Future):
            return _copy_when_done(shared)
        return _copy(shared)


class SharedResultsSchema:
    """Mixin for the Strawberry schema: a shared, error-free result skips the per-result
    extension bookkeeping (error processing, extension results), which would otherwise cost more
    per subscriber than the execution we saved. Our extensions add no results to subscription
    events; a result with errors takes Strawberry's full path."""

    async def _handle_execution_result(self, context, result, extensions_runner, *args, **kwargs):
        if not result.errors and isinstance(result.data, SharedData):
            context.result = out = StrawberryResult(data=result.data, errors=None)
            return out
        return await super()._handle_execution_result(context, result, extensions_runner, *args, **kwargs)


def _frozen(result: ExecutionResult) -> ExecutionResult:
    data = result.data
    if isinstance(data, dict) and not isinstance(data, SharedData):
        data = SharedData(data)
    return ExecutionResult(data, result.errors, result.extensions)


async def _frozen_when_done(awaitable) -> ExecutionResult:
    return _frozen(await awaitable)


def _copy(shared: ExecutionResult) -> ExecutionResult:
    # Strawberry sets `extensions` and may rewrite `errors` on the result it is handed: each
    # subscriber gets its own envelope around the shared (read-only) data.
    return ExecutionResult(shared.data, list(shared.errors) if shared.errors else None,
                           dict(shared.extensions) if shared.extensions else None)


async def _copy_when_done(task: asyncio.Future) -> ExecutionResult:
    return _copy(await asyncio.shield(task))
