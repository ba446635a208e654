// Automatic persisted queries (APQ) for the web client, shared by every gateway instance.
//
// Apollo's protocol: the client first sends only extensions.persistedQuery = {version: 1,
// sha256Hash}; on PERSISTED_QUERY_NOT_FOUND it sends the document with the same extension, which
// registers it; after that the hash alone is enough, on any instance.
//
// Where each half lives:
//   - lookup: Hive Gateway's persisted-documents plugin answers every hash-only request first (it
//     runs before the config's plugins), so gateway.config.mjs asks `registeredDocument` after its
//     safelist, and only for clients that may send documents (mobile clients stay on the safelist);
//   - registration: `useAutomaticPersistedQueries` below. The hash must be the sha256 of the
//     document sent (else 400 PERSISTED_QUERY_MISMATCH: nobody can file a document under another's
//     hash), and the document is stored only once it has parsed and validated against the
//     supergraph, so the store holds only small valid operations, never arbitrary text.
//     (@graphql-yoga/plugin-apq does both halves in onParams: behind Hive's plugin its lookup
//     never runs, and it stores a document before it is parsed.)
//
// The store is the gateway's cache (`cache` in gatewayConfig): Redis when REDIS_URL is set, so a
// document registered through one instance is known to all; keys `apq:v1:<sha256>` expire after
// APQ_TTL_SECONDS (default one day; an expired document is registered again by the client's link).
// An error from the store is a miss (lookup) or a skipped registration, never a failed request:
// the client then sends the document. (Not tested against a Redis outage.)
import { createHash } from 'node:crypto';

import { GraphQLError } from 'graphql';

const KEY_PREFIX = 'apq:v1:';
const SHA256_HEX = /^[0-9a-f]{64}$/;

// Requests whose document came from the store or the safelist (not from the client): nothing to
// register. Filled by registeredDocument's caller through `markResolvedById`.
const resolvedById = new WeakSet();
const pending = new WeakMap(); // request -> {hash, query} waiting for a valid parse

export function markResolvedById(request) {
  if (request) resolvedById.add(request);
}

function persistedQueryHash(params) {
  const pq = params?.extensions?.persistedQuery;
  return pq && pq.version === 1 && typeof pq.sha256Hash === 'string' ? pq.sha256Hash : null;
}

/** The document registered under `hash`, or null (unknown, expired, or the store unreachable). */
export async function registeredDocument(hash, context) {
  const cache = context?.cache;
  if (!cache || !SHA256_HEX.test(hash)) return null;
  try {
    const query = await cache.get(KEY_PREFIX + hash);
    return typeof query === 'string' ? query : null;
  } catch (err) {
    context?.log?.warn?.({ err: String(err) }, '[apq] store unreachable: treating the hash as unknown');
    return null;
  }
}

/**
 * Registration of web clients' documents.
 * @param {{mayRegister: (request: Request) => boolean, safelisted: (hash: string) => boolean, ttlSeconds: number}} options
 */
export function useAutomaticPersistedQueries({ mayRegister, safelisted, ttlSeconds }) {
  async function register(context) {
    const registration = pending.get(context?.request);
    if (!registration || !context.cache) return;
    pending.delete(context.request);
    try {
      await context.cache.set(KEY_PREFIX + registration.hash, registration.query, { ttl: ttlSeconds });
    } catch (err) {
      context.log?.warn?.({ err: String(err) }, '[apq] could not register a document');
    }
  }
  return {
    onParams({ params, request }) {
      const hash = persistedQueryHash(params);
      if (hash === null || typeof params.query !== 'string' || resolvedById.has(request)) return;
      const actual = createHash('sha256').update(params.query, 'utf8').digest('hex');
      if (hash.toLowerCase() !== actual) {
        throw new GraphQLError('PersistedQueryMismatch: el hash no es el SHA-256 del documento enviado.', {
          extensions: { code: 'PERSISTED_QUERY_MISMATCH', http: { status: 400 } },
        });
      }
      // Persisted-only clients were already refused by the persisted-documents plugin; this is
      // the same rule, kept here so that no plugin order lets them register.
      if (!mayRegister(request)) {
        throw new GraphQLError('Este cliente solo puede enviar operaciones persistidas (documentId).', {
          extensions: { code: 'PERSISTED_QUERY_ONLY' },
        });
      }
      if (!safelisted(actual)) pending.set(request, { hash: actual, query: params.query });
    },
    // Execution starts only for a document that parsed and validated: register it then, before
    // the answer leaves, so the next hash-only request finds it on any instance.
    onExecute({ args }) {
      return register(args.contextValue);
    },
    onSubscribe({ args }) {
      return register(args.contextValue);
    },
  };
}
