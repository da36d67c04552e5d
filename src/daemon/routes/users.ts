import { z } from 'zod';
import { PREFERENCES_MAX_BYTES } from '../../engines/users/user-store.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf, guardUser } from '../auth.js';
import { id as userId } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';

const JSON_TYPE = { 'Content-Type': 'application/json' };

const email = z.email().max(320);
const userParams = z.object({ user_id: userId });

const user = z.object({ id: z.string(), email: z.string(), tier: z.string(), created_at: z.string(), updated_at: z.string() });

export function userRoutes(router: ApiRouter, node: StrataNode): void {
  router.route(
    {
      method: 'post',
      path: '/v1/users',
      summary: 'Create a user',
      tag: 'users',
      access: 'service',
      body: z.strictObject({ id: userId.optional(), email, tier: z.string().min(1) }),
      responses: { 201: { description: 'created', schema: user }, 409: { description: 'id or email exists' } },
    },
    async (c, { body, caller }) => c.json(await node.users.create(actorOf(caller), body), 201),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/users/:user_id',
      summary: 'A user',
      tag: 'users',
      access: 'read',
      params: userParams,
      responses: { 200: { description: 'the user', schema: user } },
    },
    (c, { params, caller }) => {
      guardUser(caller, params.user_id);
      return c.json(node.users.get(params.user_id));
    },
  );

  router.route(
    {
      method: 'patch',
      path: '/v1/users/:user_id',
      summary: "Change a user's email or tier",
      tag: 'users',
      access: 'service',
      params: userParams,
      body: z.strictObject({ email: email.optional(), tier: z.string().min(1).optional() }),
      responses: { 200: { description: 'the user', schema: user } },
    },
    async (c, { params, body, caller }) => c.json(await node.users.update(actorOf(caller), params.user_id, body)),
  );

  for (const [method, path] of [['delete', '/v1/users/:user_id'], ['post', '/v1/users/:user_id/erase']] as const) {
    router.route(
      {
        method,
        path,
        summary: 'Erase a user (a job): profile, preferences, conversations and archives, usage, tokens, vectors naming them, and their key; billing entries are kept',
        tag: 'privacy',
        access: 'service',
        params: userParams,
        responses: { 202: { description: '{job_id}; GET /v1/jobs/{job_id} shows progress' } },
      },
      async (c, { params, caller }) => {
        const job = await node.startErasure(actorOf(caller), params.user_id);
        return c.json({ job_id: job.id }, 202);
      },
    );
  }

  router.route(
    {
      method: 'get',
      path: '/v1/users/:user_id/export',
      summary: 'Everything held about a user, as a zip of JSON files',
      tag: 'privacy',
      access: 'service',
      params: userParams,
      responses: { 200: { description: 'application/zip' } },
    },
    async (c, { params, caller }) => {
      const body = await node.exportUser(actorOf(caller), params.user_id);
      return new Response(body, {
        headers: { 'content-type': 'application/zip', 'content-disposition': `attachment; filename="user-${params.user_id}.zip"` },
      });
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/jobs/:job_id',
      summary: 'A job: status, progress 0..1, result when done',
      tag: 'jobs',
      access: 'service',
      params: z.strictObject({ job_id: z.string().uuid() }),
      responses: { 200: { description: 'the job' } },
    },
    async (c, { params }) => c.json(node.jobs.get(params.job_id)),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/jobs/:job_id/cancel',
      summary: 'Cancel a queued or running job (409 when it has already ended)',
      tag: 'jobs',
      access: 'service',
      params: z.strictObject({ job_id: z.string().uuid() }),
      responses: { 200: { description: 'the job, cancelled or about to be' } },
    },
    async (c, { params, caller }) => c.json(await node.jobRunner.cancel(actorOf(caller), params.job_id)),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/users/:user_id/preferences',
      summary: "A user's preferences ({} when never set)",
      tag: 'users',
      access: 'read',
      params: userParams,
      responses: { 200: { description: 'the preferences object' } },
    },
    async (c, { params, caller }) => {
      guardUser(caller, params.user_id);
      return c.body((await node.users.preferencesJson(params.user_id)) as Uint8Array<ArrayBuffer>, 200, JSON_TYPE);
    },
  );

  router.route(
    {
      method: 'put',
      path: '/v1/users/:user_id/preferences',
      summary: `Replace a user's preferences: any JSON object up to ${PREFERENCES_MAX_BYTES} bytes`,
      tag: 'users',
      access: 'write',
      params: userParams,
      body: z.record(z.string(), z.unknown()),
      responses: { 200: { description: 'the stored object' }, 413: { description: 'over 64 KiB' } },
    },
    async (c, { params, body, caller }) => {
      guardUser(caller, params.user_id);
      return c.json(await node.users.setPreferences(actorOf(caller), params.user_id, body));
    },
  );
}
