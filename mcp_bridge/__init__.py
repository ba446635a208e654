"""MCP-to-GraphQL bridge: n8n and AI agents reach the supergraph through the Model Context Protocol.

A client of the gateway only: every tool is one named GraphQL operation from `schema/operations/`
sent to the gateway with an access token exchanged from the caller's organization API key, so the
gateway's limits and the subgraphs' permission checks apply exactly as for any other client.
"""
