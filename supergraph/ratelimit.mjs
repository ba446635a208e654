// Rate limits at the edge, with Hive Gateway's own rate-limiting plugin (`rateLimiting` in
// gatewayConfig, @envelop/rate-limiter underneath) and the gateway's cache as its store: with
// REDIS_URL set, every gateway instance counts in the same Redis.
//
// Who is counted: the signed-in user or API key (the verified JWT's `sub`), else the client
// address (the TCP peer the gateway saw). Limits count calls of each root field per identity in a
// sliding window; the mutations that do real work (or guard credentials) have their own, lower
// limits, and the anonymous ones among them always count per client address so that rotating
// tokens does not reset them.
//
// A refused call answers HTTP 429 with Retry-After (seconds) and extensions.code RATE_LIMITED.
// The plugin's own error (statusCode 429, Retry-After in ms, an English message naming the key)
// is rewritten in onResultProcess so clients get one documented shape.
//
// Environment (per window RATE_LIMIT_WINDOW_SECONDS, default 60):
//   RATE_LIMIT_FIELD          calls per root field per identity (default 300)
//   RATE_LIMIT_STAMP          stampInvoice per user (default 30)
//   RATE_LIMIT_CREDENTIALS    signUp/logIn/requestPasswordReset/exchangeApiKey per client address (default 10)
//   RATE_LIMIT_DISABLED=true  off (benchmarks)
import { GraphQLError } from 'graphql';

const HEAVY_PER_USER = ['stampInvoice'];
const CREDENTIALS = ['signUp', 'logIn', 'requestPasswordReset', 'exchangeApiKey'];
const HEAVY = [...HEAVY_PER_USER, ...CREDENTIALS];

export function clientAddress(context) {
  const socket = context?.req?.socket ?? context?.req?.connection;
  return socket?.remoteAddress?.replace(/^::ffff:/, '') || 'unknown';
}

function byUserOrAddress(context) {
  const sub = context?.jwt?.sub;
  return sub ? `user:${sub}` : `addr:${clientAddress(context)}`;
}

function byAddress(context) {
  return `addr:${clientAddress(context)}`;
}

/** The `rateLimiting` config list (null when disabled). */
export function rateLimitConfig(env) {
  if (/^(1|true|yes)$/i.test(env.RATE_LIMIT_DISABLED || '')) return null;
  const ttl = 1000 * Number(env.RATE_LIMIT_WINDOW_SECONDS || 60);
  const perField = Number(env.RATE_LIMIT_FIELD || 300);
  return [
    { type: 'Query', field: '*', max: perField, ttl, identifyFn: byUserOrAddress },
    { type: 'Mutation', field: `!(${HEAVY.join('|')})`, max: perField, ttl, identifyFn: byUserOrAddress },
    { type: 'Mutation', field: `{${HEAVY_PER_USER.join(',')}}`, max: Number(env.RATE_LIMIT_STAMP || 30), ttl, identifyFn: byUserOrAddress },
    { type: 'Mutation', field: `{${CREDENTIALS.join(',')}}`, max: Number(env.RATE_LIMIT_CREDENTIALS || 10), ttl, identifyFn: byAddress },
  ];
}

function retryAfterSeconds(header) {
  const ms = /^(\d+)ms$/.exec(String(header ?? ''));
  return ms ? Math.max(1, Math.ceil(Number(ms[1]) / 1000)) : Math.max(1, Number.parseInt(header, 10) || 60);
}

function asRateLimited(error) {
  const http = error?.extensions?.http;
  if (http?.statusCode !== 429) return error;
  const seconds = retryAfterSeconds(http.headers?.['Retry-After']);
  return new GraphQLError(`Demasiadas solicitudes. Intenta de nuevo en ${seconds} s.`, {
    path: error.path,
    extensions: {
      code: 'RATE_LIMITED',
      retryAfter: seconds,
      http: { status: 429, headers: { 'Retry-After': String(seconds) } },
    },
  });
}

/** The plugin's 429 errors -> HTTP 429, Retry-After in seconds, extensions.code RATE_LIMITED. */
export function useRateLimitedErrors() {
  return {
    onResultProcess({ result, setResult }) {
      if (!result || Array.isArray(result) || !result.errors?.some((e) => e?.extensions?.http?.statusCode === 429)) return;
      setResult({ ...result, errors: result.errors.map(asRateLimited) });
    },
  };
}
