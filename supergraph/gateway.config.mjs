// Hive Gateway configuration for `make dev`, CI and the default edge of compose.yaml
// (supergraph/Dockerfile; the alternative is Apollo Router, router.yaml). Start it with supergraph/gateway.sh.
//
// Environment (all optional):
//   GATEWAY_HOST / GATEWAY_PORT        listen address (default 127.0.0.1:4000; passed as --host/--port by gateway.sh)
//   SUPERGRAPH_PATH                    supergraph SDL (default schema/supergraph.graphql)
//   <NAME>_URL (AUTH_URL, INVOICE_URL, ...)  subgraph URL override for each subgraph in supergraph.yaml;
//                                      default: routing URLs baked into the supergraph
//   JWKS_URL                           default `${origin of the auth URL}/.well-known/jwks.json`
//   JWT_ISSUER / JWT_AUDIENCE          default "facturacion-auth" / "facturacion-api"
//   PERSISTED_ONLY=true                reject documents that are not in persisted-documents.json
//   PERSISTED_ONLY_CLIENTS             clients held to the safelist by name (default ios,android; header
//                                      apollographql-client-name or x-client-name)
//   PERSISTED_DOCUMENTS_PATH           default supergraph/persisted-documents.json
//   APQ_TTL_SECONDS                    automatic persisted queries of the web client (apq.mjs), kept in
//                                      the gateway's cache (Redis with REDIS_URL); default 86400
//   CORS_ORIGINS                       comma-separated allowed origins ("*" = any). Unset: any origin
//                                      outside production, CORS disabled in production
//   GATEWAY_SHARED_SECRET              sent to subgraphs as X-Gateway-Secret so they believe the
//                                      client address this gateway appends to X-Forwarded-For
//   NODE_ENV=production                introspection, GraphiQL and the landing page off
//   REDIS_URL                          rate-limit counters shared by every gateway instance (unset: in memory)
//   RATE_LIMIT_*                       limits per user / client address, see ratelimit.mjs
//   MAX_BODY_BYTES                     request body limit (default 2000000); POSTs must be JSON (hygiene.mjs)
//   MAX_DEPTH / MAX_TOKENS / MAX_ALIASES   default 12 / 2000 / 30
//   OTEL_EXPORTER_OTLP_ENDPOINT        OpenTelemetry traces over OTLP/HTTP to this endpoint (+ /v1/traces),
//                                      traceparent propagated to the subgraphs; unset: no tracing at all
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

import { defineConfig, getCacheInstanceFromConfig } from '@graphql-hive/gateway';
import { GraphQLError } from 'graphql';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import YAML from 'yaml';

import { markResolvedById, registeredDocument, useAutomaticPersistedQueries } from './apq.mjs';
import { useRequestHygiene } from './hygiene.mjs';
import { rateLimitConfig, useRateLimitedErrors } from './ratelimit.mjs';
import { useSharedUpstreamSubscriptions, useSubgraphSubscriptionErrors } from './subscriptions.mjs';
import { upstreamRetry } from './upstream.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const production = env.NODE_ENV === 'production';

// ---------------------------------------------------------------------------------------------
// OpenTelemetry (the gateway's own plugin, @graphql-hive/plugin-opentelemetry): spans for the HTTP
// request, the GraphQL phases and every subgraph call, with the W3C traceparent sent to the
// subgraphs so their spans (shared/telemetry.py) join the same trace. Exported over OTLP/HTTP
// (protobuf) to OTEL_EXPORTER_OTLP_ENDPOINT, like every Python process of the stack; the SDK's
// own variables apply (OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_SCHEDULE_DELAY, ...). Unset: the SDK
// is not even loaded.
// ---------------------------------------------------------------------------------------------
const tracing = Boolean((env.OTEL_EXPORTER_OTLP_ENDPOINT || '').trim()) && !/^true$/i.test(env.OTEL_SDK_DISABLED || '');
// The plugin records each operation's document (graphql.document); a client may write a password
// or an RFC inline instead of in variables, so string literals leave the process as "***"
// (the same rule as shared/telemetry.py for the subgraphs' spans).
const STRING_LITERAL = /"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"/g;
function withoutLiterals(exporter) {
  const clean = (span) => {
    const document = span.attributes?.['graphql.document'];
    if (typeof document !== 'string') return span;
    const copy = Object.create(span); // everything else (spanContext(), resource, ...) from the span
    copy.attributes = { ...span.attributes, 'graphql.document': document.replace(STRING_LITERAL, '"***"') };
    return copy;
  };
  return {
    export: (spans, done) => exporter.export(spans.map(clean), done),
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush(),
  };
}
if (tracing) {
  const { openTelemetrySetup } = await import('@graphql-hive/gateway/opentelemetry/setup');
  const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
  openTelemetrySetup({
    contextManager: new AsyncLocalStorageContextManager(),
    resource: { serviceName: 'gateway' },
    // No url: the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (a base URL) and appends /v1/traces.
    traces: { exporter: withoutLiterals(new OTLPTraceExporter()) },
  });
}
const HEALTH_PATHS = new Set(['/healthcheck', '/readiness']);
const openTelemetryConfig = {
  traces: {
    spans: {
      // Probes every few seconds are not requests anyone wants to follow.
      http: ({ request }) => !HEALTH_PATHS.has(new URL(request.url, 'http://localhost').pathname),
    },
  },
};

const supergraphPath = path.resolve(env.SUPERGRAPH_PATH || path.join(here, '..', 'schema', 'supergraph.graphql'));

// ---------------------------------------------------------------------------------------------
// Subgraph URL overrides: <NAME>_URL for every subgraph in supergraph.yaml, which is generated
// from the service registry (shared/registry.py), so a new subgraph needs no edit here.
// ---------------------------------------------------------------------------------------------
const SUBGRAPH_URL_ENV = Object.fromEntries(
  Object.keys(YAML.parse(readFileSync(path.join(here, 'supergraph.yaml'), 'utf8')).subgraphs)
    .map((name) => [name, `${name.toUpperCase()}_URL`]),
);

/** routing URLs baked into the supergraph: {name: url} */
function supergraphRoutingUrls() {
  if (!existsSync(supergraphPath)) return {};
  const sdl = readFileSync(supergraphPath, 'utf8');
  const urls = {};
  for (const m of sdl.matchAll(/@join__graph\(\s*name:\s*"([^"]+)"\s*,\s*url:\s*"([^"]*)"\s*\)/g)) urls[m[1]] = m[2];
  return urls;
}

const transportEntries = {
  // Every HTTP subgraph: run subscriptions over WebSocket (graphql-transport-ws) on the same URL
  // (http -> ws). Strawberry serves graphql-transport-ws on /graphql.
  '*.http': {
    options: {
      subscriptions: {
        kind: 'ws',
        // WebSocket subgraph connections get no propagated headers, so hand the client's
        // Authorization on explicitly: in the connection_init payload and as an upgrade header.
        // (Interpolated per operation; empty values are dropped, so anonymous stays anonymous.)
        headers: [['authorization', '{context.forwardedAuthorization}']],
        options: {
          connectionParams: { Authorization: '{context.forwardedAuthorization}' },
        },
      },
    },
  },
};
for (const [name, variable] of Object.entries(SUBGRAPH_URL_ENV)) {
  if (env[variable]) transportEntries[name] = { location: env[variable] };
}

// ---------------------------------------------------------------------------------------------
// Optional JWT verification (RS256 / EdDSA) against the auth subgraph's JWKS.
// No token: anonymous (signUp/logIn). A token that is present but invalid: HTTP 401.
// The token itself is forwarded untouched; subgraphs verify it again.
// ---------------------------------------------------------------------------------------------
const authUrl = env.AUTH_URL || supergraphRoutingUrls().auth || 'http://127.0.0.1:4001/graphql';
const jwksUrl = env.JWKS_URL || `${new URL(authUrl).origin}/.well-known/jwks.json`;
const jwks = createRemoteJWKSet(new URL(jwksUrl), {
  timeoutDuration: 5_000,
  cooldownDuration: 30_000, // an unknown `kid` refetches the JWKS at most every 30 s (key rotation)
  cacheMaxAge: 10 * 60_000,
});
const jwtOptions = {
  issuer: env.JWT_ISSUER || 'facturacion-auth',
  audience: env.JWT_AUDIENCE || 'facturacion-api',
  algorithms: ['RS256', 'EdDSA'],
  clockTolerance: 30,
};

function unauthenticated(message) {
  return new GraphQLError(message, {
    extensions: {
      code: 'UNAUTHENTICATED',
      http: { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } },
    },
  });
}

/** Authorization from the HTTP request, or from the graphql-ws connection_init payload. */
function clientAuthorization(context) {
  const params = context.connectionParams;
  if (params && typeof params === 'object') {
    for (const key of Object.keys(params)) {
      if (key.toLowerCase() === 'authorization' && typeof params[key] === 'string') return params[key];
    }
  }
  return context.request?.headers?.get?.('authorization') || undefined;
}

// Verified tokens, remembered by their exact text: a client sends the same token with every request
// for its lifetime, and jose's verification (WebCrypto signature check, claims) was a tenth to a
// fifth of the gateway's CPU per stampInvoice. A remembered token is accepted until it expires
// (exp + the same clock tolerance) and for at most VERIFIED_MAX_AGE_MS after its verification, so a
// key removed from the JWKS stops being honoured within that time (jose's own JWKS cache already
// keeps keys for cacheMaxAge). Only tokens that passed jwtVerify here are ever in it; the
// subgraphs verify every token themselves regardless.
const VERIFIED_MAX_ENTRIES = 4096;
const VERIFIED_MAX_AGE_MS = 60_000;
const verifiedTokens = new Map(); // token -> { payload, until (ms) }

export function rememberedToken(token, now = Date.now()) {
  const hit = verifiedTokens.get(token);
  if (hit === undefined) return undefined;
  if (now >= hit.until) {
    verifiedTokens.delete(token);
    return undefined;
  }
  return hit.payload;
}

export function rememberToken(token, payload, now = Date.now()) {
  const expiry = typeof payload.exp === 'number' ? (payload.exp + jwtOptions.clockTolerance) * 1000 : Infinity;
  const until = Math.min(now + VERIFIED_MAX_AGE_MS, expiry);
  if (!(until > now)) return payload;
  while (verifiedTokens.size >= VERIFIED_MAX_ENTRIES) verifiedTokens.delete(verifiedTokens.keys().next().value);
  const frozen = Object.freeze(payload); // shared by every request that sends this token
  verifiedTokens.set(token, { payload: frozen, until });
  return frozen;
}

function useOptionalJwt() {
  return {
    onContextBuilding({ context, extendContext }) {
      const authorization = clientAuthorization(context);
      if (!authorization) return undefined;
      const match = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i.exec(authorization.trim());
      if (!match) throw unauthenticated('Malformed Authorization header: expected "Bearer <JWT>"');
      const remembered = rememberedToken(match[1]);
      if (remembered !== undefined) {
        extendContext({ jwt: remembered, forwardedAuthorization: authorization });
        return undefined;
      }
      return jwtVerify(match[1], jwks, jwtOptions).then(
        ({ payload }) => {
          extendContext({ jwt: rememberToken(match[1], payload), forwardedAuthorization: authorization });
        },
        (err) => {
          // JWKS unreachable / broken: not the client's fault, so 503 rather than 401.
          if (err?.code === 'ERR_JWKS_TIMEOUT' || err?.code === 'ERR_JWKS_INVALID' || err?.name === 'TypeError') {
            throw new GraphQLError('Cannot verify the token right now (JWKS unavailable)', {
              extensions: { code: 'AUTH_UNAVAILABLE', http: { status: 503 } },
            });
          }
          throw unauthenticated(`Invalid token: ${err?.code ?? 'verification failed'}`);
        },
      );
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The client's address for the subgraphs' per-client throttles: append the peer we saw to
// X-Forwarded-For and prove, with GATEWAY_SHARED_SECRET, that this gateway wrote it (subgraphs
// believe only the last entry, and only with the secret: shared/client_address.py).
// ---------------------------------------------------------------------------------------------
const gatewaySecret = env.GATEWAY_SHARED_SECRET || '';
function clientAddressHeaders(request, context) {
  const socket = context?.req?.socket ?? context?.req?.connection;
  const peer = socket?.remoteAddress?.replace(/^::ffff:/, '');
  if (!peer) return {};
  const earlier = request.headers.get('x-forwarded-for');
  return {
    'x-forwarded-for': earlier ? `${earlier}, ${peer}` : peer,
    ...(gatewaySecret ? { 'x-gateway-secret': gatewaySecret } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Max aliases (not among the CLI's built-in armor options): a validation rule.
// ---------------------------------------------------------------------------------------------
const maxAliases = Number(env.MAX_ALIASES || 30);
function useMaxAliases(limit) {
  const rule = (ctx) => {
    let count = 0;
    return {
      Field(node) {
        if (node.alias && ++count === limit + 1) {
          ctx.reportError(new GraphQLError(`Syntax Error: Aliases limit of ${limit} exceeded.`, { nodes: [node] }));
        }
      },
    };
  };
  return { onValidate: ({ addValidationRule }) => addValidationRule(rule) };
}

// ---------------------------------------------------------------------------------------------
// A subgraph that cannot be reached (refused, reset, timed out, or a proxy's answer that is not
// GraphQL) is reported as SUBGRAPH_UNAVAILABLE with its name in extensions.serviceName, instead of
// the masked "Unexpected error.": the client can tell "this part is down, retry" from a bug. The
// rest of the answer is still delivered (fields that cross a service boundary are nullable).
// ---------------------------------------------------------------------------------------------
const UNREACHABLE = new Set(['SUBREQUEST_HTTP_ERROR', 'RESPONSE_VALIDATION_FAILED', 'TIMEOUT_ERROR']);
function useSubgraphUnavailable() {
  const unavailable = (serviceName) => new GraphQLError(
    `El servicio ${serviceName} no está disponible en este momento; intenta de nuevo en unos segundos.`,
    { extensions: { code: 'SUBGRAPH_UNAVAILABLE', serviceName } },
  );
  const unreachable = (error) => UNREACHABLE.has(error?.extensions?.code);
  return {
    onSubgraphExecute({ subgraphName }) {
      return ({ result, setResult }) => {
        if (!result?.errors?.some?.(unreachable)) return;
        setResult({ ...result, errors: result.errors.map((e) => (unreachable(e) ? unavailable(subgraphName) : e)) });
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Persisted documents ({sha256: document}, generated by persist.mjs).
// ---------------------------------------------------------------------------------------------
const persistedPath = path.resolve(env.PERSISTED_DOCUMENTS_PATH || path.join(here, 'persisted-documents.json'));
const persisted = existsSync(persistedPath) ? JSON.parse(readFileSync(persistedPath, 'utf8')) : {};
const persistedOnly = /^(1|true|yes)$/i.test(env.PERSISTED_ONLY || '');
// Mobile apps ship only safelisted operations: a client naming itself in PERSISTED_ONLY_CLIENTS
// (Apollo's client-awareness header `apollographql-client-name`, or `x-client-name`) may send no
// other document, while the web client keeps sending full documents.
const persistedOnlyClients = new Set((env.PERSISTED_ONLY_CLIENTS ?? 'ios,android').split(',').map((c) => c.trim().toLowerCase()).filter(Boolean));
function clientName(request) {
  return (request.headers.get('apollographql-client-name') || request.headers.get('x-client-name') || '').trim().toLowerCase();
}
function allowArbitraryDocuments(request) {
  return !persistedOnly && !persistedOnlyClients.has(clientName(request));
}

// ---------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------
function corsConfig() {
  const origins = (env.CORS_ORIGINS || '').split(',').map((o) => o.trim()).filter(Boolean);
  if (origins.length === 0) return !production; // dev: reflect any origin; production: off
  return {
    origin: origins.includes('*') ? '*' : origins,
    credentials: !origins.includes('*'),
    methods: ['GET', 'POST', 'OPTIONS'],
    allowedHeaders: ['authorization', 'content-type', 'x-request-id', 'accept', 'apollographql-client-name', 'apollographql-client-version', 'x-client-name'],
    exposedHeaders: ['x-request-id'],
    maxAge: 600,
  };
}

// Hive Gateway caches the loaded supergraph in its cache under one fixed key, and a starting
// instance serves what it finds there before its own file. With a shared Redis that is another
// instance's schema: the previous release during a deploy, or another stack's on a shared test
// Redis. Our supergraph is a local file, so the cache buys nothing: that key is never read or kept.
const SUPERGRAPH_CACHE_KEY = 'hive-gateway:supergraph';

export function withoutSupergraph(cache) {
  return new Proxy(cache, {
    get(target, prop, receiver) {
      if (prop === 'get') return (key) => (key === SUPERGRAPH_CACHE_KEY ? undefined : target.get(key));
      if (prop === 'set') return (key, value, options) => (key === SUPERGRAPH_CACHE_KEY ? undefined : target.set(key, value, options));
      return Reflect.get(target, prop, receiver);
    },
  });
}

export const gatewayConfig = defineConfig({
  supergraph: supergraphPath,
  host: env.GATEWAY_HOST || '127.0.0.1',
  port: Number(env.GATEWAY_PORT || 4000),
  graphqlEndpoint: '/graphql',
  healthCheckEndpoint: '/healthcheck', // liveness: the process answers
  readinessCheckEndpoint: '/readiness', // readiness: the supergraph is loaded
  pollingInterval: 10_000, // pick up a re-composed schema/supergraph.graphql without a restart
  transportEntries,
  // Rate limits (ratelimit.mjs), counted in Redis when REDIS_URL is set so every instance agrees.
  // The supergraph itself is kept out of it: every instance reads its own file (see below).
  ...(env.REDIS_URL ? { cache: async (ctx) => withoutSupergraph(
    await getCacheInstanceFromConfig({ cache: { type: 'redis', url: env.REDIS_URL, lazyConnect: false } }, ctx)) } : {}),
  ...(rateLimitConfig(env) ? { rateLimiting: rateLimitConfig(env) } : {}),
  upstreamRetry, // a query that failed on a reused connection is retried (upstream.mjs)
  ...(tracing ? { openTelemetry: openTelemetryConfig } : {}),
  propagateHeaders: {
    fromClientToSubgraphs({ request, context }) {
      return {
        authorization: context?.forwardedAuthorization ?? request.headers.get('authorization') ?? undefined,
        'x-request-id': request.headers.get('x-request-id') ?? undefined,
        ...clientAddressHeaders(request, context),
      };
    },
  },
  persistedDocuments: {
    // Own keys only: an id such as "__proto__" must be unknown, not Object.prototype (a 500).
    // Then the documents web clients registered (APQ, apq.mjs); persisted-only clients: the safelist.
    getPersistedOperation: async (id, request, context) => {
      const key = String(id).replace(/^sha256:/, '').toLowerCase();
      const document = Object.hasOwn(persisted, key) ? persisted[key]
        : allowArbitraryDocuments(request) ? await registeredDocument(key, context) : null;
      if (document !== null) markResolvedById(request);
      return document;
    },
    extractPersistedOperationId: (params) => {
      if (typeof params.documentId === 'string') return params.documentId;
      const pq = params.extensions?.persistedQuery;
      return pq && pq.version === 1 && typeof pq.sha256Hash === 'string' ? pq.sha256Hash : null;
    },
    allowArbitraryDocuments,
    // Apollo's code for an id the gateway does not know: Apollo clients' persisted-query link
    // answers it by sending the full document (the yoga default, PERSISTED_QUERY_NOT_IN_LIST, they ignore).
    customErrors: {
      notFound: { message: 'PersistedQueryNotFound', extensions: { code: 'PERSISTED_QUERY_NOT_FOUND' } },
      persistedQueryOnly: { message: 'Este cliente solo puede enviar operaciones persistidas (documentId).', extensions: { code: 'PERSISTED_QUERY_ONLY' } },
    },
  },
  maxDepth: Number(env.MAX_DEPTH || 12),
  maxTokens: Number(env.MAX_TOKENS || 2000),
  blockFieldSuggestions: true,
  ...(production ? { disableIntrospection: true } : {}),
  graphiql: !production,
  landingPage: !production,
  cors: corsConfig(),
  gracefulShutdownTimeout: 5_000,
  // Client subscriptions identical down to the token share one upstream subscription; a subgraph's
  // refusal of one reaches the client unmasked (both subscriptions.mjs; the refusal first, so that
  // shared upstreams hand it on).
  plugins: () => [useOptionalJwt(), useMaxAliases(maxAliases), useSubgraphUnavailable(), useRateLimitedErrors(),
    useSubgraphSubscriptionErrors(), useSharedUpstreamSubscriptions(),
    useRequestHygiene({ maxBodyBytes: Number(env.MAX_BODY_BYTES || 2_000_000) }),
    useAutomaticPersistedQueries({ mayRegister: allowArbitraryDocuments, safelisted: (hash) => Object.hasOwn(persisted, hash),
      ttlSeconds: Number(env.APQ_TTL_SECONDS || 86_400) })],
});
