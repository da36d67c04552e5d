import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { rawTarget } from './request-target.js';
import { InsufficientStorage, isOutOfSpace, ReadOnlyReplica, StrataError, type ErrorCode } from '../engines/errors.js';

// The one place where errors become HTTP responses. Engines throw typed StrataErrors; this
// maps their code to a status. Anything else is a bug: it is logged with its stack and the
// client gets a 500 that reveals nothing about the internals.

/** Each error code's HTTP status; the compatible APIs (compat/) answer with the same ones in their own shapes. */
export const STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  invalid_input: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  quota_exceeded: 429,
  rate_limited: 429,
  read_only_replica: 409,
  log_pruned: 410,
  unavailable: 503,
  insufficient_storage: 507,
  internal: 500,
};

export function errorBody(code: ErrorCode | string, message: string, details?: Record<string, unknown>) {
  return { error: { code, message, ...(details ? { details } : {}) } };
}

/**
 * Whether the client went away before its request was read: node:http marks the request
 * aborted (or destroyed before complete); Bun and Deno abort the request's signal.
 */
function clientGone(c: Context): boolean {
  const incoming = (c.env as { incoming?: { aborted?: boolean; destroyed?: boolean; complete?: boolean } } | undefined)?.incoming;
  if (incoming) return incoming.aborted === true || (incoming.destroyed === true && incoming.complete !== true);
  return c.req.raw.signal?.aborted === true;
}

/** Deno fails the body read itself, before the request's signal says anything. */
function bodyReadFailed(err: unknown): boolean {
  const e = err as { name?: unknown; message?: unknown } | null;
  return e?.name === 'BadResource' && typeof e.message === 'string' && e.message.includes('request body');
}

export interface ErrorOptions {
  /** replication.redirect_writes: a write refused by a replica becomes a 307 to its primary. */
  redirectWrites?: boolean;
}

export function errorResponse(c: Context, err: unknown, options: ErrorOptions = {}): Response {
  // A full disk met on a path that did not say so itself is still the client's answer: 507.
  if (!(err instanceof StrataError) && isOutOfSpace(err)) err = new InsufficientStorage("the server's disk");
  // A body that stops because its client hung up is not a server error: it was logged as an
  // unhandled error and counted as a 500, which the 5xx alert rule reads (review). 499 (nginx's
  // "client closed request") is what metrics and the log show; nobody receives it.
  if ((!(err instanceof StrataError) || err.code === 'internal') && (clientGone(c) || bodyReadFailed(err))) {
    c.get('log')?.info({ error: err instanceof Error ? err.message : String(err) }, 'the client closed the connection before its request was read');
    return c.json(errorBody('client_closed_request', 'the client closed the connection'), 499 as ContentfulStatusCode);
  }
  if (err instanceof ReadOnlyReplica && options.redirectWrites) {
    const redirect = toPrimary(c, err.details?.primary);
    if (redirect) return c.json(errorBody('read_only_replica', `${err.message}; redirected`, err.details), 307, { Location: redirect });
  }
  if (err instanceof StrataError) {
    if (err.code === 'internal') c.get('log')?.error({ err }, 'request failed');
    if (err.code === 'unauthorized') c.header('WWW-Authenticate', 'Bearer realm="strata"');
    if (err.code === 'rate_limited') c.header('Retry-After', String(err.details?.retry_after_seconds ?? 1));
    return c.json(errorBody(err.code, err.message, err.details), STATUS[err.code]);
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    const code = status === 404 ? 'not_found' : status === 413 ? 'payload_too_large' : status < 500 ? 'invalid_input' : 'internal';
    return c.json(errorBody(code, err.message || 'request failed'), status);
  }
  c.get('log')?.error({ err }, 'unhandled error');
  return c.json(errorBody('internal', 'an internal error occurred; see the server log for the request id'), 500);
}

/**
 * The same path and query on the primary, as the client sent them, or undefined when the
 * primary's URL is not known (a replica that has not reached it yet names it in words).
 */
function toPrimary(c: Context, primary: unknown): string | undefined {
  if (typeof primary !== 'string' || !/^https?:\/\//.test(primary)) return undefined;
  return primary.replace(/\/+$/, '') + rawTarget(c);
}
