"""A small GraphQL client for tests: raises on transport errors, returns `data`/`errors`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Result:
    data: dict | None
    errors: list[dict] | None

    @property
    def error_codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code") for e in self.errors or []]


class GraphQLClient:
    def __init__(self, http: httpx.AsyncClient, path: str = "/graphql"):
        self.http, self.path = http, path

    async def execute(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None,
                      headers: dict[str, str] | None = None) -> Result:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        resp = await self.http.post(self.path, json={"query": query, "variables": variables or {}}, headers=hdrs)
        assert resp.status_code in (200, 400), f"HTTP {resp.status_code}: {resp.text[:500]}"
        body = resp.json()
        return Result(body.get("data"), body.get("errors"))

    async def ok(self, query: str, variables: dict[str, Any] | None = None, **kw) -> dict:
        """Execute and assert there were no GraphQL errors."""
        r = await self.execute(query, variables, **kw)
        assert not r.errors, r.errors
        return r.data
