import { z } from 'zod';
import { ROLES } from '../../engines/auth/token-store.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import { decodeCursor, page, pageQuery } from '../pagination.js';
import { id as userId } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';

// Cursor shapes, built once (a schema built per request was a tenth of a hot read's CPU).
const BEFORE_SEQ = z.object({ before: z.number().int() });

export const tokenCreateBody = z.strictObject({
  name: z.string().min(1).max(200),
  role: z.enum(ROLES),
  user_id: userId.optional(),
  /** Also make an S3 access key id and secret for the S3 endpoint (same role and user). */
  s3: z.boolean().optional(),
});

const tokenCreated = z.object({
  id: z.string(),
  token: z.string().describe('the secret; shown only in this response'),
  name: z.string(),
  role: z.enum(ROLES),
  user_id: z.string().nullable(),
  created_at: z.string(),
  s3: z.object({ access_key_id: z.string(), secret_access_key: z.string().describe('shown only in this response') }).optional(),
});

export function adminRoutes(router: ApiRouter, node: StrataNode): void {
  router.route(
    {
      method: 'post',
      path: '/v1/admin/tokens',
      summary: 'Create a token; the secret is in this response only',
      tag: 'admin',
      access: 'admin',
      body: tokenCreateBody,
      responses: { 201: { description: 'created', schema: tokenCreated } },
    },
    async (c, { body, caller }) => {
      const created = await node.tokens.create(actorOf(caller), body, (userId) => node.users.get(userId));
      return c.json(created, 201);
    },
  );

  router.route(
    {
      method: 'delete',
      path: '/v1/admin/tokens/:id',
      summary: 'Revoke a token',
      tag: 'admin',
      access: 'admin',
      params: z.object({ id: z.string().min(1).max(64) }),
      responses: { 204: { description: 'revoked' }, 404: { description: 'no such token' } },
    },
    async (c, { params, caller }) => {
      await node.tokens.delete(actorOf(caller), params.id);
      return c.body(null, 204);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/admin/status',
      summary: 'Node role, epoch, change-log position, replicas and storage',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: 'status' } },
    },
    (c) => c.json(node.status()),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/admin/audit',
      summary: 'Audit entries, newest first',
      tag: 'admin',
      access: 'admin',
      query: pageQuery,
      responses: { 200: { description: 'a page of entries' } },
    },
    (c, { query }) => {
      const from = decodeCursor(query.cursor, BEFORE_SEQ);
      const rows = node.audit.list(query.limit + 1, from?.before);
      return c.json(page(rows, query.limit, (last) => ({ before: last.seq })));
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/admin/audit/verify',
      summary: 'Recompute the hash chain; names the first broken entry',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: '{ok, entries, head_hash, first_broken?}' } },
    },
    (c) => c.json(node.audit.verify()),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/gc',
      summary: 'Collect unreferenced blobs older than the grace period, and expired upload sessions, now',
      tag: 'admin',
      access: 'admin',
      query: z.object({ grace_seconds: z.coerce.number().int().min(0).optional(), upload_ttl_seconds: z.coerce.number().int().min(0).optional() }),
      responses: { 200: { description: 'what was removed' }, 409: { description: 'not a writable primary, or a tier this node does not own' } },
    },
    async (c, { query, caller }) => {
      const grace = (query.grace_seconds ?? node.config.objects.gc_grace_seconds) * 1000;
      const uploadTtl = (query.upload_ttl_seconds ?? node.config.objects.upload_session_ttl_seconds) * 1000;
      return c.json(await node.collectGarbage(actorOf(caller), grace, uploadTtl));
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/tiers/:tier/adopt',
      summary: "Take an object tier over for this node's cluster (after a restore that replaces a lost node): GC and deletes work there again",
      tag: 'admin',
      access: 'admin',
      params: z.object({ tier: z.enum(['hot', 'archive']) }),
      responses: { 200: { description: '{tier, owner, previous_owner}' }, 409: { description: 'not a primary, or the marker changed meanwhile' } },
    },
    async (c, { params, caller }) => c.json(await node.adoptTier(actorOf(caller), params.tier)),
  );
}
