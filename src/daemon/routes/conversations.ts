import { z } from 'zod';
import { MAX_MESSAGES_PER_APPEND, ROLES } from '../../engines/conversations/conversation-store.js';
import { Forbidden, InvalidInput } from '../../engines/errors.js';
import type { ApiRouter } from '../api-router.js';
import type { Caller } from '../app-env.js';
import { actorOf, guardUser } from '../auth.js';
import { decodeCursor, encodeCursor, page, pageQuery } from '../pagination.js';
import { reply, wantsMsgpack } from '../reply.js';
import { id } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';

// Cursor shapes, built once (a schema built per request was a tenth of a hot read's CPU).
const LIST_CURSOR = z.object({ created_at: z.string(), id: z.string() });
const MESSAGE_CURSOR = z.object({ after: z.number().int().min(0) });
const JSON_TYPE = { 'Content-Type': 'application/json' };

const MAX_CONTENT_CHARS = 1024 * 1024;

const conversation = z.object({
  id: z.string(),
  user_id: z.string(),
  title: z.string().nullable(),
  model: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
  message_count: z.int(),
  token_count: z.int(),
  archived: z.boolean(),
});
const message = z.object({ seq: z.int(), role: z.enum(ROLES), content: z.string(), tokens: z.int(), created_at: z.string() });
const newMessage = z.strictObject({
  role: z.enum(ROLES),
  content: z.string().max(MAX_CONTENT_CHARS),
  tokens: z.int().min(0).max(10_000_000).optional(),
});
const params = z.object({ id });

/** The user a list is about: a user token sees only its own; other roles must say whose. */
export function listedUser(caller: Caller, userId: string | undefined): string {
  if (caller.role === 'user') {
    const own = caller.userId!;
    if (userId !== undefined) guardUser(caller, userId);
    return own;
  }
  if (userId === undefined) throw new InvalidInput('user_id is required');
  return userId;
}

export function conversationRoutes(router: ApiRouter, node: StrataNode): void {
  const { conversations } = node;
  /** Tenant guard for a conversation id: another user's conversation is "not found". */
  const guard = (caller: Caller, conversationId: string) => {
    guardUser(caller, conversations.ownerOf(conversationId), `conversation ${conversationId}`);
  };

  router.route(
    {
      method: 'post',
      path: '/v1/conversations',
      summary: 'Start a conversation',
      tag: 'conversations',
      access: 'write',
      body: z.strictObject({ id: id.optional(), user_id: id, title: z.string().max(500).optional(), model: z.string().max(200).optional() }),
      responses: { 201: { description: 'created', schema: conversation }, 403: { description: 'a user token gave an id (only service and admin tokens choose ids)' }, 404: { description: 'no such user' } },
    },
    async (c, { body, caller }) => {
      guardUser(caller, body.user_id);
      // Conversation ids are one namespace across users: a user token that could choose one
      // would learn from a 409 that another user's conversation has it. Only trusted callers
      // (service, admin) choose ids; for a user token the server always does.
      if (body.id !== undefined && caller.role === 'user') throw new Forbidden('a user token cannot choose a conversation id; leave id out and the server assigns one');
      node.users.get(body.user_id);
      return c.json(await conversations.create(actorOf(caller), body), 201);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/conversations',
      summary: "A user's conversations, newest first (by creation)",
      tag: 'conversations',
      access: 'read',
      query: pageQuery.extend({ user_id: id.optional() }),
      responses: { 200: { description: 'a page of conversations' } },
    },
    (c, { query, caller }) => {
      const userId = listedUser(caller, query.user_id);
      const after = decodeCursor(query.cursor, LIST_CURSOR);
      const rows = conversations.list(userId, query.limit + 1, after);
      return c.json(page(rows, query.limit, (r) => ({ created_at: r.created_at, id: r.id })));
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/conversations/:id',
      summary: 'A conversation: metadata with message_count, token_count and updated_at',
      tag: 'conversations',
      access: 'read',
      params,
      responses: { 200: { description: 'the conversation', schema: conversation } },
    },
    async (c, { params, caller }) => {
      const conv = await conversations.get(params.id);
      guardUser(caller, conv.user_id, `conversation ${params.id}`);
      return c.json(conv);
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/conversations/:id/messages',
      summary: `Append one message, or {messages:[...]} (up to ${MAX_MESSAGES_PER_APPEND}); seq numbers are gapless from 1`,
      tag: 'conversations',
      access: 'write',
      params,
      msgpack: true,
      body: z.union([newMessage, z.strictObject({ messages: z.array(newMessage).min(1).max(MAX_MESSAGES_PER_APPEND) })]),
      responses: { 201: { description: 'the stored messages', schema: z.object({ items: z.array(message) }) } },
    },
    async (c, { params, body, caller }) => {
      const input = 'messages' in body ? body.messages : [body];
      // The tenant guard runs inside the append, on the row the write reads anyway.
      const owner = caller.role === 'user' ? (caller.userId ?? '') : undefined;
      return reply(c, { items: await conversations.append(actorOf(caller), params.id, input, owner) }, 201);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/conversations/:id/messages',
      summary: 'Messages in seq order: after a seq (?after=), or the last N (?last=)',
      tag: 'conversations',
      access: 'read',
      params,
      query: pageQuery.extend({
        after: z.coerce.number().int().min(0).optional(),
        last: z.coerce.number().int().min(1).max(1000).optional(),
      }),
      responses: { 200: { description: 'a page of messages' } },
    },
    async (c, { params, query, caller }) => {
      const cursor = decodeCursor(query.cursor, MESSAGE_CURSOR);
      if (cursor && query.last !== undefined) throw new InvalidInput('cursor and last cannot be combined');
      const after = cursor?.after ?? query.after;
      const p = await conversations.messagePage(params.id, { after, limit: query.limit, last: query.last });
      // The page carries its owner, so the guard costs no second lookup on the hot path.
      guardUser(caller, p.user_id, `conversation ${params.id}`);
      const next = p.more && p.json.length > 0 ? encodeCursor({ after: p.first + p.json.length - 1 }) : null;
      if (wantsMsgpack(c)) return reply(c, { items: p.json.map((j) => JSON.parse(j) as unknown), next_cursor: next });
      // Messages are cached in their JSON form: the answer is assembled, not re-serialised,
      // and kept with the page (the same object for every read of a hot tail).
      p.rendered ??= Buffer.from(`{"items":[${p.json.join(',')}],"next_cursor":${JSON.stringify(next)}}`);
      return c.body(p.rendered as Uint8Array<ArrayBuffer>, 200, JSON_TYPE);
    },
  );

  router.route(
    {
      method: 'delete',
      path: '/v1/conversations/:id',
      summary: 'Delete a conversation, its messages and its archive',
      tag: 'conversations',
      access: 'write',
      params,
      responses: { 204: { description: 'deleted' } },
    },
    async (c, { params, caller }) => {
      guard(caller, params.id);
      await conversations.delete(actorOf(caller), params.id);
      return c.body(null, 204);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/conversations/:id/archive',
      summary: 'Where the conversation lives: hot (SQLite) or an object in the archive tier',
      tag: 'conversations',
      access: 'read',
      params,
      responses: { 200: { description: 'its location' } },
    },
    async (c, { params, caller }) => {
      guard(caller, params.id);
      const location = node.conversationArchive.location(params.id);
      return c.json(location ? { archived: true, ...location } : { archived: false, tier: 'hot' });
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/jobs/conversation-archive',
      summary: 'Run the conversation archive and retention job now (it also runs on a timer)',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: 'what the run did, with the compression ratio' } },
    },
    async (c) => c.json(await node.runConversationArchive()),
  );
}
