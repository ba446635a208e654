// Request hygiene at the edge, before any parsing:
//   - a body larger than MAX_BODY_BYTES (default 2 MB, like the router's http_max_request_bytes)
//     is refused with 413 from its Content-Length (yoga's own streaming limit still caps bodies
//     sent without one);
//   - a POST executes only with Content-Type application/json (or the legacy application/graphql+json;
//     clients may Accept application/graphql-response+json, the GraphQL-over-HTTP response type).
//     Form-encoded, multipart and text/plain bodies are what a foreign web page can send without a
//     CORS preflight (a cross-site request forgery riding on the user's cookies/credentials), so
//     they are refused with 415 before anything runs. GET stays for queries only (yoga answers 405
//     to a mutation over GET).
const EXECUTABLE_POST_TYPES = new Set(['application/json', 'application/graphql+json']);

function refusal(fetchAPI, status, code, message, headers = {}) {
  return new fetchAPI.Response(JSON.stringify({ errors: [{ message, extensions: { code } }] }), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
  });
}

export function useRequestHygiene({ maxBodyBytes, graphqlEndpoint = '/graphql' }) {
  return {
    onRequest({ request, url, fetchAPI, endResponse }) {
      if (url.pathname !== graphqlEndpoint || request.method !== 'POST') return;
      const length = Number(request.headers.get('content-length'));
      if (Number.isFinite(length) && length > maxBodyBytes) {
        endResponse(refusal(fetchAPI, 413, 'PAYLOAD_TOO_LARGE', `La solicitud excede ${maxBodyBytes} bytes.`));
        return;
      }
      const mediaType = (request.headers.get('content-type') || '').split(';')[0].trim().toLowerCase();
      if (!EXECUTABLE_POST_TYPES.has(mediaType)) {
        endResponse(refusal(fetchAPI, 415, 'UNSUPPORTED_MEDIA_TYPE',
          'Envía la operación como JSON (Content-Type: application/json).', { accept: 'application/json' }));
      }
    },
  };
}
