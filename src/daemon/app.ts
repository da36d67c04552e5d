import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { Hono, type Context } from 'hono';
import type { AppEnv } from './app-env.js';
import { ApiRouter } from './api-router.js';
import { errorBody, errorResponse } from './http-error.js';
import { adminRoutes } from './routes/admin.js';
import { opsRoutes } from './routes/ops.js';
import { apiDocsRoutes } from './routes/api-docs.js';
import { checkpointRoutes } from './routes/checkpoints.js';
import { modelRoutes } from './routes/models.js';
import { userRoutes } from './routes/users.js';
import { conversationRoutes } from './routes/conversations.js';
import { usageRoutes } from './routes/usage.js';
import { vectorRoutes } from './routes/vectors.js';
import { graphRoutes } from './routes/graph.js';
import { replicationRoutes } from './routes/replication.js';
import { privacyRoutes } from './routes/privacy.js';
import { datasetRoutes } from './routes/datasets.js';
import { feedbackRoutes } from './routes/feedback.js';
import { hfMirror } from './compat/hf/hf-mirror.js';
import { openaiConversations } from './compat/openai/openai-conversations.js';
import { RateLimiter } from './rate-limiter.js';
import { rawTarget } from './request-target.js';
import type { StrataNode } from './strata-node.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Methods named in metrics and the log; any other is "other". */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** The HTTP application for one node. Listening, TLS and shutdown live in server.ts. */
export function createApp(node: StrataNode): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const { metrics, requestLog } = node;

  // One middleware for request id, metrics and the request log line, so all three agree on
  // the route template and the status. Logged: method, route template, status, duration,
  // token id. Never the Authorization header, the query string or a body.
  app.use('*', async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    c.set('requestId', requestId);
    c.set('log', node.log);
    c.set('route', 'unmatched');
    // Response headers are set before the handler runs. Set on a finished response, hono
    // rebuilds it as a web Response with a ReadableStream body, which cost more than the whole
    // rest of a small request. Under @hono/node-server they go straight onto the socket's
    // response, which writeHead merges; elsewhere into the headers hono prepares.
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    if (outgoing) outgoing.setHeader('X-Request-Id', requestId);
    else c.header('X-Request-Id', requestId);
    // Which epoch answered a write (as the request began): a client, or the partition test's
    // checker, can tell writes acknowledged by two primaries apart.
    const method = c.req.method;
    if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') {
      const epoch = String(node.replication.epoch());
      if (outgoing) outgoing.setHeader('Strata-Epoch', epoch);
      else c.header('Strata-Epoch', epoch);
    }
    metrics.inflight++;
    try {
      if (hasDotSegment(c)) c.res = c.json(errorBody('invalid_input', 'the request path contains "." or ".." segments'), 400);
      else await next();
    } finally {
      metrics.inflight--;
    }
    // A HEAD runs the GET handler (hono dispatches it so) and its body is dropped unread: a
    // streamed body is cancelled here, so that the file or job behind it is closed now.
    if (c.req.method === 'HEAD') c.res.body?.cancel().catch(() => undefined);
    // A node that began draining while this request ran closes its connection after it.
    if (node.draining) {
      if (!outgoing) c.header('Connection', 'close');
      else if (!outgoing.headersSent) outgoing.setHeader('Connection', 'close');
    }
    const seconds = (performance.now() - started) / 1000;
    const route = c.get('route');
    const status = c.res.status;
    // Deno hands over any method token; as a label each would be a new series (review).
    const label = METHODS.has(method) ? method : 'other';
    metrics.observeRequest(label, route, status, seconds);
    requestLog.write({ reqId: requestId, method: label, route, status, ms: Math.round(seconds * 1e4) / 10, tokenId: c.get('caller')?.tokenId });
  });

  const limit = node.config.security.rate_limit;
  const router = new ApiRouter(app, node.tokens, { bytes: node.config.server.max_body_bytes, jsonDepth: node.config.security.max_json_depth }, {
    rateLimiter: new RateLimiter(limit.requests_per_second, limit.burst, () => node.metrics.rateLimited.inc()),
    authFailed: (reason) => node.authFailed(reason),
  });
  opsRoutes(router, node);
  apiDocsRoutes(router);
  adminRoutes(router, node);
  userRoutes(router, node);
  modelRoutes(router, node);
  checkpointRoutes(router, node);
  conversationRoutes(router, node);
  usageRoutes(router, node);
  vectorRoutes(router, node);
  graphRoutes(router, node);
  replicationRoutes(router, node);
  privacyRoutes(router, node);
  datasetRoutes(router, node);
  feedbackRoutes(router, node);
  // HF_ENDPOINT=http://host:port/hf (compat/hf/hf-mirror.ts).
  app.route('/hf', hfMirror(node));
  // baseURL: http://host:port/openai/v1 (compat/openai/openai-conversations.ts).
  app.route('/openai/v1', openaiConversations(node));

  app.notFound((c) => c.json(errorBody('not_found', `no route for ${METHODS.has(c.req.method) ? c.req.method : 'this method'} ${c.req.path}`), 404));
  const errorOptions = { redirectWrites: node.config.replication.redirect_writes };
  app.onError((err, c) => errorResponse(c, err, errorOptions));
  return app;
}

/**
 * URL parsing resolves dot segments ("/files/a/../b" becomes "/files/b") before routing, so a
 * traversal attempt would silently land somewhere else. They are refused on the raw target:
 * node:http's IncomingMessage.url, or Deno's request.url, which keeps it as sent (Bun's is
 * already resolved; see bun-listener.ts). Checked in the one middleware every request passes
 * (a second one cost a compose step per request), and only paths holding a "." or "%" are
 * matched against the pattern.
 */
function hasDotSegment(c: Context<AppEnv>): boolean {
  const raw = rawTarget(c);
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  return (path.includes('.') || path.includes('%')) && /(^|\/)(\.|%2e){1,2}(\/|$)/i.test(path);
}
