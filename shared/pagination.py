"""Relay-style connections: `first`/`after`, opaque cursors, `pageInfo`, a bounded page size.

Cursors are keyset positions (the sort key of the last row seen), base64-encoded so clients treat
them as opaque; offsets are never used, so a page does not shift when rows are inserted before it.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Generic, TypeVar

import strawberry

from shared.errors import InputError

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 512  # ours are a timestamp or a name plus a UUID: ~100 characters


@strawberry.federation.type(shareable=True)  # defined by every subgraph with a connection
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[T]:
        return [e.node for e in self.edges]


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None, *types) -> list[Any] | None:
    """The keyset position in `cursor`, each part converted by the matching callable in `types`
    (e.g. `datetime.fromisoformat, uuid.UUID`). A cursor that is not ours, or whose parts do not
    convert, is a typed INVALID_CURSOR error, never a database error."""
    if cursor is None:
        return None
    try:
        # Bounded before decoding, and only a flat list of scalars: a forged cursor must not cost
        # a deep parse or reach the database as a structure.
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(value, list) or (types and len(value) != len(types)):
            raise ValueError
        if any(isinstance(v, (list, dict)) for v in value):
            raise ValueError
        return [convert(v) for convert, v in zip(types, value)] if types else value
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError, RecursionError, OverflowError):
        raise InputError.single("INVALID_CURSOR", "El cursor no es válido.", ["after"]) from None


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 0 or first > MAX_PAGE_SIZE:
        raise InputError.single(
            "INVALID_PAGE_SIZE", f"`first` debe estar entre 0 y {MAX_PAGE_SIZE}.", ["first"]
        )
    return first


def build_connection(rows: list, size: int, *, to_node, key_of, after: str | None = None) -> Connection:
    """`rows` must hold up to `size + 1` rows fetched after the cursor: the extra one tells
    whether there is a next page without a COUNT query."""
    has_next = len(rows) > size
    rows = rows[:size]
    edges = [Edge(cursor=encode_cursor(key_of(r)), node=to_node(r)) for r in rows]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
