// @apollo/client (with graphql-ws) against the running gateway, driven by
// tests/e2e/test_client_libraries.py and test_rate_limits_through_gateway.py. Prints one JSON line
// with what the client saw.
//   node apollo_client.mjs tour <gateway http url> <access token> <draft invoice id>
//   node apollo_client.mjs persisted <gateway http url> <access token> <client name> <operation file or inline document>
//   node apollo_client.mjs throttled <gateway http url> <access token>
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
const { RetryLink } = require('@apollo/client/link/retry');
const { GraphQLWsLink } = require('@apollo/client/link/subscriptions');
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');

const [mode, url, token, ...rest] = process.argv.slice(2);
const operation = (name) => gql(readFileSync(path.join(root, 'schema', 'operations', `${name}.graphql`), 'utf8'));
const headers = { authorization: `Bearer ${token}` };
const http = () => new HttpLink({ uri: `${url}/graphql`, headers });
const client = (link) => new ApolloClient({ link, cache: new InMemoryCache() });

const sent = []; // what went over the wire for the persisted-query link
const recording = new ApolloLink((op, forward) => {
  sent.push({ hash: op.extensions?.persistedQuery?.sha256Hash ?? null });
  return forward(op);
});

async function tour([invoiceId]) {
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

  return {
    query: me.data.me.id,
    persisted: { id: viaHash.data.me.id, sent },
    mutation: mutation.data.stampInvoice.invoice.status,
    statuses,
  };
}

// What went over HTTP: each request's body (has it the document? which hash?) and the answer.
function recordingFetch(log) {
  return async (input, init) => {
    const body = init?.body ? JSON.parse(init.body) : {};
    const started = Date.now();
    const response = await fetch(input, init);
    const text = await response.clone().text();
    let codes = [];
    try { codes = (JSON.parse(text).errors || []).map((e) => e.extensions?.code ?? null); } catch { /* not JSON */ }
    log.push({ hasQuery: typeof body.query === 'string', hash: body.extensions?.persistedQuery?.sha256Hash ?? null,
      querySha256: typeof body.query === 'string' ? createHash('sha256').update(body.query).digest('hex') : null,
      status: response.status, retryAfter: response.headers.get('retry-after'), codes, started });
    return response;
  };
}

function errorCodes(error) {
  const graphQLErrors = error?.errors ?? [];
  return graphQLErrors.map((e) => e.extensions?.code ?? null);
}

// A client with Apollo's persisted-query link (sha256 from node:crypto), naming itself with
// apollographql-client-name. SHA256_SUFFIX makes the link compute a wrong hash (a forged registration).
async function persisted([clientName, document]) {
  const sent = [];
  const wrong = process.env.SHA256_SUFFIX || '';
  const link = ApolloLink.from([
    new PersistedQueryLink({ sha256: (text) => createHash('sha256').update(text + wrong).digest('hex') }),
    new HttpLink({ uri: `${url}/graphql`, headers: { ...headers, 'apollographql-client-name': clientName }, fetch: recordingFetch(sent) }),
  ]);
  const query = document.endsWith('.graphql') ? operation(document.replace(/\.graphql$/, '')) : gql(document);
  try {
    const result = await client(link).query({ query, fetchPolicy: 'network-only' });
    return { data: result.data, sent };
  } catch (error) {
    return { error: errorCodes(error), message: String(error?.message ?? error), sent };
  }
}

// A web client that is throttled: RetryLink retries an HTTP 429 after the answer's Retry-After
// (seconds). The HttpLink asks for application/json, so a 429 is a failed request (ServerError,
// which RetryLink sees) rather than a GraphQL result with errors.
async function throttled() {
  const sent = [];
  const link = ApolloLink.from([
    new RetryLink({
      attempts: (count, _op, error) => count <= 3 && error?.statusCode === 429,
      delay: (_count, _op, error) => 1000 * Number(error.response.headers.get('retry-after')),
    }),
    new HttpLink({ uri: `${url}/graphql`, headers: { ...headers, accept: 'application/json' }, fetch: recordingFetch(sent) }),
  ]);
  const result = await client(link).query({ query: operation('Me'), fetchPolicy: 'network-only' });
  return { data: result.data, sent };
}

async function main() {
  const modes = { tour, persisted, throttled };
  if (!modes[mode]) throw new Error(`unknown mode ${mode}`);
  const seen = await modes[mode](rest);
  if (seen) console.log(JSON.stringify(seen));
}

main().then(() => process.exit(0), (e) => { console.error(e?.stack || String(e)); process.exit(1); });
