// Gateway -> subgraph connections: why a burst after an idle pause must not fail.
//
// The gateway's fetch (@whatwg-node/node-fetch over node:http's global agent) keeps idle sockets
// for 5 s (Node's default agent timeout). A subgraph must therefore keep an idle keep-alive
// connection open LONGER than that, or both sides race to close it and a request written on a
// socket the server has just closed fails with ECONNRESET / "socket hang up". The subgraphs run
// uvicorn with `--timeout-keep-alive 75` (shared/serving.py; compose.yaml, Dockerfile); Apollo Router's own pool keeps idle sockets 15 s.
//
// What can still fail (a subgraph restarted, a proxy in between closing early) is retried here,
// with Hive Gateway's own upstream-retry plugin, but only for queries and only when no HTTP
// response came back: a query is safe to run twice; a mutation that may have reached the
// subgraph is not, so it is never retried.
import { getOperationAST } from 'graphql';

function isQuery(executionRequest) {
  const type = executionRequest.operationType
    ?? getOperationAST(executionRequest.document, executionRequest.operationName)?.operation;
  return type === 'query';
}

/** `upstreamRetry` for gatewayConfig: queries that never got a response are retried twice. */
export function upstreamRetry({ executionRequest }) {
  if (!isQuery(executionRequest)) return undefined;
  return {
    maxRetries: 2,
    retryDelay: 20, // the retry opens a fresh connection; no reason to wait long
    retryDelayFactor: 5,
    // No Response: the connection failed or was reset before an answer (a network error the
    // transport turned into an error result). A subgraph's own answer, even a 5xx, is final.
    shouldRetry: ({ response, executionResult }) => !response && Boolean(executionResult?.errors?.length),
  };
}
