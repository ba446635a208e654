"""The bridge's own settings: it talks to the gateway only, so it needs no database."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    app_env: Literal["development", "test", "production"] = "development"
    gateway_url: str = "http://127.0.0.1:4000/graphql"
    # The operation files that become tools and the supergraph they are typed against (the
    # container image copies `schema/` here; a checkout uses its own).
    mcp_schema_dir: Path = Path(__file__).resolve().parent.parent / "schema"
    # Which mutations become tools: none (read-only bridge), curated (the vetted list), or all.
    mcp_mutations: Literal["none", "curated", "all"] = "curated"
    # A read-only tool that runs any query document with the key's permissions (off by default:
    # an agent is better served by the typed tools, and a free-form query is harder to audit).
    mcp_graphql_query_tool: bool = False
    # Tool calls per API key per minute (per bridge process).
    mcp_rate_limit_per_minute: int = Field(default=120, ge=1)
    # How long before expiry an exchanged access token is replaced.
    mcp_token_refresh_margin_seconds: int = Field(default=60, ge=0)
    # Upper bound for `waitSeconds` on long operations (n8n's tool timeout is 60 s).
    mcp_max_wait_seconds: int = Field(default=25, ge=0, le=55)
    # Keep-alive: shorter than the gateway's own idle timeout so a reused connection is never
    # one the server is about to close.
    gateway_keepalive_seconds: float = 4.0
    gateway_timeout_seconds: float = 30.0
    log_level: str = "INFO"


@lru_cache
def get_bridge_settings() -> BridgeSettings:
    return BridgeSettings()
