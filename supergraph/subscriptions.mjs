// One upstream subscription per distinct (subgraph, token, document, variables), shared by every
// client subscription that asks for exactly that.
//
// Hive Gateway opens one upstream subscription per client subscription (multiplexed on one
// WebSocket per token, @graphql-mesh/transport-ws); its in-flight deduplication covers HTTP
// queries only. A user with several tabs, or a dashboard that many sessions of one token watch,
// made the subgraph run and send the same event once per client, and the gateway receive and
// parse it once per client. Here the first such client starts the upstream subscription and the
// others join it; each receives its own copy of every event, and the upstream subscription ends
// when the last one leaves.
//
// Why sharing cannot leak across tenants or people: the key holds the exact Authorization the
// upstream subscription is opened with (the only per-client input of a subgraph WebSocket
// request, see transportEntries in gateway.config.mjs), so only clients holding the same token
// share, and they would have received identical events anyway.
import { getOperationAST, print } from 'graphql';

const printed = new WeakMap(); // document -> its text (documents are cached and reused by the gateway)

function documentText(document) {
  let text = printed.get(document);
  if (text === undefined) {
    text = print(document);
    printed.set(document, text);
  }
  return text;
}

function isAsyncIterable(value) {
  return value != null && typeof value[Symbol.asyncIterator] === 'function';
}

function isSubscription(executionRequest) {
  const type = executionRequest.operationType
    ?? getOperationAST(executionRequest.document, executionRequest.operationName)?.operation;
  return type === 'subscription';
}

function deepCopy(value) {
  // The gateway annotates the results it receives from a subgraph (delegation): each client
  // gets its own copy of the data (plain JSON); errors are passed on as they are.
  if (value == null || typeof value !== 'object' || value.data == null) return value;
  try {
    return { ...value, data: structuredClone(value.data) };
  } catch {
    return value;
  }
}

function shallowCopy(value) {
  // A final result on its way to a client: plugins may replace its fields (error masking), not
  // edit its data; each client gets its own envelope around the shared data.
  return value != null && typeof value === 'object' ? { ...value } : value;
}

/** One client's view of a shared upstream subscription: an async iterator with its own queue. */
class Follower {
  constructor(upstream, copy) {
    this.upstream = upstream;
    this.copy = copy;
    this.queue = [];
    this.waiter = null;
    this.done = false;
    this.error = null;
  }

  push(value) {
    if (this.done) return;
    if (this.waiter) {
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve({ value: this.copy(value), done: false });
    } else {
      this.queue.push(value);
    }
  }

  end(error) {
    if (this.done) return;
    this.done = true;
    this.error = error ?? null;
    if (this.waiter) {
      const { resolve, reject } = this.waiter;
      this.waiter = null;
      if (this.error) {
        const e = this.error;
        this.error = null;
        reject(e);
      } else {
        resolve({ value: undefined, done: true });
      }
    }
  }

  next() {
    if (this.queue.length) return Promise.resolve({ value: this.copy(this.queue.shift()), done: false });
    if (this.error) {
      const e = this.error;
      this.error = null;
      return Promise.reject(e);
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  return() {
    this.queue.length = 0;
    this.end();
    this.upstream.leave(this);
    return Promise.resolve({ value: undefined, done: true });
  }

  throw() {
    return this.return();
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

class Upstream {
  constructor(onClosed) {
    this.followers = new Set();
    this.onClosed = onClosed;
    this.iterator = null;
    this.closed = false;
    this.ready = null;
  }

  start(execute) {
    this.ready = Promise.resolve()
      .then(execute)
      .then(
        (result) => {
          if (!isAsyncIterable(result)) {
            this.close(); // refused (an error result): every client waiting gets it; the next one retries
            return result;
          }
          this.iterator = result[Symbol.asyncIterator]();
          this.pump();
          return null;
        },
        (error) => {
          this.close();
          throw error;
        },
      );
  }

  async pump() {
    let failure;
    try {
      for (;;) {
        const { value, done } = await this.iterator.next();
        if (done || this.closed) break;
        for (const follower of this.followers) follower.push(value);
      }
    } catch (error) {
      failure = error;
    }
    this.close();
    for (const follower of this.followers) follower.end(failure);
  }

  leave(follower) {
    this.followers.delete(follower);
    if (this.followers.size === 0 && !this.closed) {
      this.close();
      this.iterator?.return?.();
    }
  }

  close() {
    if (!this.closed) {
      this.closed = true;
      this.onClosed();
    }
  }
}

/**
 * Gateway plugin: subgraph subscriptions with the same (subgraph, Authorization, document,
 * operation name, variables) share one upstream subscription, and client subscriptions with the
 * same (Authorization, document, operation name, variables) share one execution per event.
 */
export function useSharedUpstreamSubscriptions() {
  const upstreams = new Map();

  const clientStreams = new Map();

  async function follow(upstreams, key, execute, signal, copy) {
    let upstream = upstreams.get(key);
    if (upstream === undefined) {
      upstream = new Upstream(() => {
        if (upstreams.get(key) === upstream) upstreams.delete(key);
      });
      upstreams.set(key, upstream);
      upstream.start(execute);
    }
    const refused = await upstream.ready;
    if (refused) return refused;
    if (upstream.closed) return follow(upstreams, key, execute, signal, copy); // it ended just now: start afresh
    const follower = new Follower(upstream, copy);
    upstream.followers.add(follower);
    signal?.addEventListener?.('abort', () => follower.return(), { once: true });
    return follower;
  }

  return {
    onSubgraphExecute({ subgraphName, executionRequest, executor, setExecutor }) {
      if (!isSubscription(executionRequest)) return;
      const key = JSON.stringify([
        subgraphName,
        executionRequest.context?.forwardedAuthorization ?? '',
        documentText(executionRequest.document),
        executionRequest.operationName ?? null,
        executionRequest.variables ?? {},
      ]);
      const signal = executionRequest.signal ?? executionRequest.info?.signal;
      setExecutor((request) => follow(upstreams, key, () => executor({
        // The shared upstream outlives the client that started it: not its abort signal.
        ...request,
        signal: undefined,
        info: request.info ? { ...request.info, signal: undefined } : request.info,
      }), signal, deepCopy));
    },
    // The same one level up: identical client subscriptions (same token, document, variables)
    // share the gateway's execution of each event (delegation, merging), so each client costs
    // only its own envelope, JSON and socket write. Anonymous subscriptions are not shared.
    onSubscribe({ args, subscribeFn, setSubscribeFn }) {
      const authorization = args.contextValue?.forwardedAuthorization;
      if (!authorization) return;
      const key = JSON.stringify([
        authorization,
        documentText(args.document),
        args.operationName ?? null,
        args.variableValues ?? {},
      ]);
      setSubscribeFn((subscribeArgs) => follow(clientStreams, key, () => subscribeFn({ ...subscribeArgs, signal: undefined }),
        subscribeArgs.signal, shallowCopy));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Subgraph subscription errors, as the subgraph sent them.
//
// A subgraph refuses a subscription before its stream starts (a check that raises before the
// resolver returns its stream, a document it does not validate) with the graphql-transport-ws
// `error` message, and graphql-ws rejects the upstream iterator with that message's payload: an
// array of plain error objects, no GraphQLErrors, which the gateway masked as
// INTERNAL_SERVER_ERROR "Unexpected error." (errors sent in a `next` payload, a stream ended by
// an error, always reached the client). Such a refusal becomes the stream's last result,
// `{ data: null, errors }`, which the gateway handles like any subgraph result: the client gets
// the message and extensions (code, ...) plus serviceName, over WebSocket and SSE alike.
// Anything else that ends the stream (a dropped socket, a bug) is still masked; a dropped socket
// rejects with a CloseEvent, which is no Error and used to reach the client as an error without
// a message, so it is thrown on as an Error (logged by the gateway, masked for the client).
// ---------------------------------------------------------------------------------------------

/** The formatted errors of a graphql-transport-ws `error` message, or null for anything else. */
function refusalErrors(thrown) {
  return Array.isArray(thrown) && thrown.length > 0
    && thrown.every((e) => e != null && typeof e === 'object' && !(e instanceof Error) && typeof e.message === 'string')
    ? thrown : null;
}

function asError(thrown) {
  if (thrown instanceof Error) return thrown;
  const detail = [thrown?.code, thrown?.reason].filter(Boolean).join(' ');
  return new Error(`Subgraph subscription failed${detail ? ` (WebSocket closed: ${detail})` : ''}`, { cause: thrown });
}

function refusalsAsResults(iterable) {
  const iterator = iterable[Symbol.asyncIterator]();
  let ended = false;
  // A plain iterator, not an async generator: return() must reach the upstream at once, not
  // after the next event (an async generator waits for its pending next() to settle first).
  return {
    next() {
      if (ended) return Promise.resolve({ value: undefined, done: true });
      return iterator.next().catch((thrown) => {
        const errors = refusalErrors(thrown);
        if (!errors) throw asError(thrown);
        ended = true;
        return { value: { data: null, errors }, done: false };
      });
    },
    return(value) {
      ended = true;
      return iterator.return ? iterator.return(value) : Promise.resolve({ value, done: true });
    },
    throw(error) {
      ended = true;
      return iterator.throw ? iterator.throw(error) : Promise.reject(error);
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/**
 * Gateway plugin: a subgraph's refusal of a subscription reaches the client as the subgraph sent
 * it. Listed before useSharedUpstreamSubscriptions, so that a shared upstream hands the refusal,
 * as a result, to every client following it.
 */
export function useSubgraphSubscriptionErrors() {
  return {
    onSubgraphExecute({ executionRequest, executor, setExecutor }) {
      if (!isSubscription(executionRequest)) return;
      setExecutor((request) => Promise.resolve(executor(request))
        .then((result) => (isAsyncIterable(result) ? refusalsAsResults(result) : result)));
    },
  };
}
