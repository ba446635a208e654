// The official TypeScript MCP SDK client against the bridge: list tools, call one, print JSON.
// Usage: node client.mjs <bridge /mcp URL> <API key>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "npm-sdk-test", version: "1.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const call = await client.callTool({
  name: "sat_catalog_search",
  arguments: { name: "MetodoPago", search: "", toolCallId: "n8n-adds-this" },
});
await client.close();
process.stdout.write(JSON.stringify({
  tools: tools.map((t) => t.name),
  noRef: !JSON.stringify(tools).includes("$ref"),
  call: { isError: call.isError ?? false, structuredContent: call.structuredContent },
}));
