import { z } from 'zod';
import { PREFERENCES_MAX_BYTES } from '../../engines/users/user-store.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf, guardUser } from '../auth.js';
import { id as userId } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';

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

  router.route(
    {
      method: 'delete',
      path: '/v1/users/:user_id',
      summary: 'Erase a user: profile, preferences, conversations and archives, usage, tokens (billing entries are kept)',
      tag: 'users',
      access: 'service',
      params: userParams,
      responses: { 204: { description: 'erased' } },
    },
    async (c, { params, caller }) => {
      await node.eraseUser(actorOf(caller), params.user_id);
      return c.body(null, 204);
    },
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
      return c.body(await node.users.preferencesJson(params.user_id), 200, { 'Content-Type': 'application/json' });
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
