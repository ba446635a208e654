// @apollo/client (with graphql-ws) against the running gateway, driven by
// tests/e2e/test_client_libraries.py. Prints one JSON line with what each client mode saw.
//   node apollo_client.mjs <gateway http url> <access token> <draft invoice id>
// Resolved from supergraph/node_modules (devDependencies there), like the gateway itself.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const require = createRequire(path.join(root, 'supergraph', 'package.json'));
const { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } = require('@apollo/client');
const { PersistedQueryLink } = require('@apollo/client/link/persisted-queries');
const { GraphQLWsLink } = require('@apollo/client/link/subscriptions');
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');

const [url, token, invoiceId] = process.argv.slice(2);
const operation = (name) => gql(readFileSync(path.join(root, 'schema', 'operations', `${name}.graphql`), 'utf8'));
const headers = { authorization: `Bearer ${token}` };
const http = () => new HttpLink({ uri: `${url}/graphql`, headers });
const client = (link) => new ApolloClient({ link, cache: new InMemoryCache() });

const sent = []; // what went over the wire for the persisted-query link
const recording = new ApolloLink((op, forward) => {
  sent.push({ hash: op.extensions?.persistedQuery?.sha256Hash ?? null });
  return forward(op);
});

async function main() {
  const plain = client(http());
  const me = await plain.query({ query: operation('Me'), fetchPolicy: 'network-only' });

  const persisted = client(ApolloLink.from([
    new PersistedQueryLink({ sha256: (text) => createHash('sha256').update(text).digest('hex') }),
    recording,
    http(),
  ]));
  const viaHash = await persisted.query({ query: operation('Me'), fetchPolicy: 'network-only' });

  const ws = createClient({ url: `${url.replace(/^http/, 'ws')}/graphql`, webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${token}` } });
  const live = client(new GraphQLWsLink(ws));
  const statuses = [];
  const stamped = new Promise((resolve, reject) => {
    const sub = live.subscribe({ query: operation('InvoiceStatusChanged'), variables: { id: invoiceId } }).subscribe({
      next: ({ data }) => {
        statuses.push(data.invoiceStatusChanged.status);
        if (data.invoiceStatusChanged.status === 'STAMPED') { sub.unsubscribe(); resolve(); }
      },
      error: reject,
    });
  });
  await new Promise((r) => setTimeout(r, 500)); // let the gateway open its upstream subscription
  const mutation = await plain.mutate({ mutation: operation('StampInvoice'), variables: { id: invoiceId, idempotencyKey: 'apollo-1' } });
  await stamped;
  await ws.dispose();

  console.log(JSON.stringify({
    query: me.data.me.id,
    persisted: { id: viaHash.data.me.id, sent },
    mutation: mutation.data.stampInvoice.invoice.status,
    statuses,
  }));
}

main().then(() => process.exit(0), (e) => { console.error(e?.stack || String(e)); process.exit(1); });
