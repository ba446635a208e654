#!/bin/sh
# Start the local/CI Hive Gateway on schema/supergraph.graphql.
#   supergraph/gateway.sh                       # http://127.0.0.1:4000/graphql
#   GATEWAY_PORT=4100 AUTH_URL=http://127.0.0.1:5001/graphql supergraph/gateway.sh
# All settings come from the environment; see gateway.config.mjs. Extra arguments are passed to
# the hive-gateway CLI. `exec` makes node the signal target: SIGTERM/SIGINT stop it cleanly.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin="$here/node_modules/@graphql-hive/gateway/dist/bin.js"
supergraph="${SUPERGRAPH_PATH:-$here/../schema/supergraph.graphql}"

if [ ! -f "$bin" ]; then
  echo "gateway.sh: $bin missing; run: npm ci --prefix supergraph" >&2
  exit 1
fi
if [ ! -f "$supergraph" ]; then
  echo "gateway.sh: $supergraph missing; run: node supergraph/compose.mjs" >&2
  exit 1
fi

# The hive-gateway CLI reads these as its own options (Apollo GraphOS uplink, listen address);
# they are meant for the Apollo Router in compose.yaml, not for this local gateway.
unset APOLLO_KEY APOLLO_GRAPH_REF HOST PORT CONFIG_PATH

export SUPERGRAPH_PATH="$supergraph"
exec node "$bin" supergraph "$supergraph" \
  --config-path "$here/gateway.config.mjs" \
  --host "${GATEWAY_HOST:-127.0.0.1}" \
  --port "${GATEWAY_PORT:-4000}" \
  "$@"
