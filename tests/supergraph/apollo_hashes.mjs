// The sha256 that @apollo/client's persisted-query link sends for each operation in
// schema/operations/, with no server: a terminating link records the hash and answers nothing.
// Prints one JSON object {operationName: hash}. Driven by test_persisted_manifests.py.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(root, 'supergraph', 'package.json'));
const { ApolloClient, ApolloLink, InMemoryCache, gql, Observable } = require('@apollo/client');
const { PersistedQueryLink } = require('@apollo/client/link/persisted-queries');

const operations = path.join(root, 'schema', 'operations');
const hashes = {};
const record = new ApolloLink((op) => {
  hashes[op.operationName] = op.extensions?.persistedQuery?.sha256Hash ?? null;
  return new Observable((observer) => { observer.next({ data: null }); observer.complete(); });
});
const client = new ApolloClient({
  link: ApolloLink.from([new PersistedQueryLink({ sha256: (text) => createHash('sha256').update(text).digest('hex') }), record]),
  cache: new InMemoryCache(),
});

for (const file of readdirSync(operations).filter((f) => f.endsWith('.graphql')).sort()) {
  const document = gql(readFileSync(path.join(operations, file), 'utf8'));
  const kind = document.definitions.find((d) => d.kind === 'OperationDefinition').operation;
  const run = kind === 'mutation' ? client.mutate({ mutation: document })
    : kind === 'subscription' ? new Promise((resolve) => client.subscribe({ query: document }).subscribe({ next: resolve, error: resolve, complete: resolve }))
      : client.query({ query: document, fetchPolicy: 'no-cache' });
  await run.catch(() => undefined); // no data comes back; only the hash matters
}
console.log(JSON.stringify(hashes));
process.exit(0);
