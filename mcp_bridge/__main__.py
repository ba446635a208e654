"""`python -m mcp_bridge`: serve the bridge with uvicorn (host/port from MCP_BRIDGE_HOST/PORT)."""

from __future__ import annotations

import os

import uvicorn

from mcp_bridge.config import get_bridge_settings
from shared.logs import configure_logging

if __name__ == "__main__":
    configure_logging("mcp-bridge", get_bridge_settings().log_level)
    uvicorn.run("mcp_bridge.app:create_app", factory=True, host=os.environ.get("MCP_BRIDGE_HOST", "127.0.0.1"),
                port=int(os.environ.get("MCP_BRIDGE_PORT", "4005")), log_config=None,
                timeout_keep_alive=75, proxy_headers=False)
