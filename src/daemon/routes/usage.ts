import { z } from 'zod';
import { ENTRY_KINDS } from '../../engines/billing/billing-ledger.js';
import { InvalidInput } from '../../engines/errors.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf, guardUser } from '../auth.js';
import { decodeCursor, page, pageQuery } from '../pagination.js';
import { id } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';
import { listedUser } from './conversations.js';

// Cursor shapes, built once (a schema built per request was a tenth of a hot read's CPU).
const SEQ_CURSOR = z.object({ seq: z.number().int() });

// Usage metering and the billing ledger. Recording usage and writing the ledger are for
// trusted backends (service tokens); users may read their own.

const tokens = z.int().min(0).max(100_000_000);
/** A day as YYYY-MM-DD; an RFC 3339 time is accepted and cut to its UTC day. */
const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}(T.*)?$/, 'expected a date (YYYY-MM-DD) or an RFC 3339 time')
  .transform((v, ctx) => {
    const t = Date.parse(v.length === 10 ? `${v}T00:00:00Z` : v);
    // Date.parse rolls 2026-02-30 over to March; a real date survives the round trip.
    if (Number.isNaN(t) || (v.length === 10 && new Date(t).toISOString().slice(0, 10) !== v)) {
      ctx.addIssue({ code: 'custom', message: 'not a real date' });
      return z.NEVER;
    }
    return new Date(t).toISOString().slice(0, 10);
  });

export function usageRoutes(router: ApiRouter, node: StrataNode): void {
  router.route(
    {
      method: 'post',
      path: '/v1/usage',
      summary: "Check and consume tokens against the user's tier limit, atomically",
      tag: 'usage',
      access: 'service',
      body: z.strictObject({ user_id: id, model: z.string().min(1).max(200), input_tokens: tokens, output_tokens: tokens }),
      responses: {
        200: { description: 'counted: {period, used_tokens, limit_tokens, remaining_tokens}' },
        429: { description: 'quota_exceeded: the limit would be passed; nothing was counted' },
      },
    },
    async (c, { body, caller }) => c.json(await node.usage.record(actorOf(caller), body)),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/users/:user_id/usage',
      summary: 'Usage by day or by model, with cost_micros from the configured prices',
      tag: 'usage',
      access: 'read',
      params: z.object({ user_id: id }),
      query: z.object({ from: day.optional(), to: day.optional(), group_by: z.enum(['day', 'model']).default('day') }),
      responses: { 200: { description: '{items:[{day|model, input_tokens, output_tokens, cost_micros}]}' } },
    },
    (c, { params, query, caller }) => {
      guardUser(caller, params.user_id);
      node.users.get(params.user_id);
      const to = query.to ?? new Date().toISOString().slice(0, 10);
      const from = query.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 30 * 86_400_000).toISOString().slice(0, 10);
      if (from > to) throw new InvalidInput('from is after to');
      return c.json({ items: node.usage.summary(params.user_id, { from, to, groupBy: query.group_by }) });
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/billing/entries',
      summary: 'Append a ledger entry; the same ref returns the first entry (idempotent)',
      tag: 'billing',
      access: 'service',
      body: z.strictObject({
        user_id: id,
        kind: z.enum(ENTRY_KINDS),
        amount_micros: z.int().min(-(2 ** 53 - 1)).max(2 ** 53 - 1).refine((v) => v !== 0, 'amount_micros must not be 0'),
        currency: z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 code such as USD'),
        ref: z.string().min(1).max(200),
        description: z.string().max(1000).optional(),
      }),
      responses: {
        201: { description: 'appended: {seq, hash, prev_hash, ...}' },
        200: { description: 'this ref was already recorded; the first entry' },
        409: { description: 'this ref names an entry with different fields' },
      },
    },
    async (c, { body, caller }) => {
      node.users.get(body.user_id);
      // The description is sealed with the user's key, which must exist first.
      if (body.description !== undefined) await node.users.ensureKey(actorOf(caller), body.user_id);
      const { entry, created } = await node.billing.append(actorOf(caller), body);
      // Billing is synchronous by default: answer once a replica has the entry (or 503).
      await node.replication.sync('billing');
      return c.json(entry, created ? 201 : 200);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/billing/entries',
      summary: 'Ledger entries in order (a user token sees only its own)',
      tag: 'billing',
      access: 'read',
      query: pageQuery.extend({ user_id: id.optional() }),
      responses: { 200: { description: 'a page of entries' } },
    },
    (c, { query, caller }) => {
      const userId = caller.role === 'user' || query.user_id !== undefined ? listedUser(caller, query.user_id) : undefined;
      const after = decodeCursor(query.cursor, SEQ_CURSOR);
      const rows = node.billing.list({ userId, limit: query.limit + 1, afterSeq: after?.seq });
      return c.json(page(rows, query.limit, (r) => ({ seq: r.seq })));
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/billing/verify',
      summary: 'Walk the hash chain: {ok, entries, head_hash}; names the first broken entry',
      tag: 'billing',
      access: 'admin',
      responses: { 200: { description: 'the verdict' } },
    },
    (c) => c.json(node.billing.verify()),
  );
}
