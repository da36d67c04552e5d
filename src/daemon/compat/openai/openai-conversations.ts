import { Hono, type Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { type Conversation, type MessageItem, type MessagePage, type NewMessage, type Role } from '../../../engines/conversations/conversation-store.js';
import { InvalidInput, isOutOfSpace, NotFound, StrataError, Unauthorized } from '../../../engines/errors.js';
import type { AppEnv, Caller } from '../../app-env.js';
import { actorOf, authorize } from '../../auth.js';
import { readJsonBody } from '../../json-body.js';
import { STATUS } from '../../http-error.js';
import type { StrataNode } from '../../strata-node.js';
import { Slices } from '../slices.js';

// OpenAI's Conversations API (issue 18) over the conversation store, mounted at /openai/v1 so
// that the openai SDKs work with only `baseURL: "http://host:port/openai/v1"` and a Strata
// token as the API key. A conversation is a Strata conversation (`conv_` + its UUID without
// hyphens); an item is a Strata message (`msg_` + the conversation's hex + its seq in hex), so
// every item has the same store, cache, archive, retention, encryption, erasure and export as
// a native message, and a native read of the conversation shows the same messages.
//
// Only message items are kept (roles user, assistant, system, developer; input_text and
// output_text parts). A message of several parts is stored as their joined text with the
// parts' types and lengths beside it; a deleted item stays as an emptied placeholder so seq
// numbers stay gapless, and is left out here. The owner is the user of a user token, or
// `metadata.user_id` when a service token creates the conversation.

const CONV = /^conv_([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$/;
const ITEM = /^msg_([0-9a-f]{32})([0-9a-f]{8})$/;
const ROLES = new Set(['user', 'assistant', 'system', 'developer']);
const PART_TYPES = new Set(['input_text', 'output_text']);
const MAX_ITEMS = 20;
const MAX_METADATA = 16;
const MAX_CONTENT_CHARS = 1024 * 1024;
const JSON_TYPE = { 'Content-Type': 'application/json' };

type Json = Record<string, unknown>;
interface StoredMessage {
  seq: number;
  role: string;
  content: string;
  item?: MessageItem;
}

export function openaiConversations(node: StrataNode): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const { conversations } = node;
  const limits = { bytes: node.config.server.max_body_bytes, jsonDepth: node.config.security.max_json_depth };
  /** Rendered item lists, kept with the page they were made from (a page of a hot tail is one object until the next change). */
  const rendered = new WeakMap<MessagePage, Map<string, Buffer>>();

  app.use('*', async (c, next) => {
    c.set('route', '/openai/v1/*');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '');
    const info = m ? node.tokens.authenticate(m[1]!) : undefined;
    if (!info) {
      node.authFailed(m ? 'invalid' : 'missing');
      return failure(c, new Unauthorized(m ? 'Incorrect API key provided: use a Strata token as the API key' : 'You did not provide an API key: send a Strata token as the bearer'));
    }
    c.set('caller', { tokenId: info.id, role: info.role, userId: info.user_id });
    return next();
  });
  app.onError((err, c) => failure(c, err));
  app.notFound((c) => failure(c, new NotFound(`Invalid URL (${c.req.method} ${c.req.path})`)));

  const failure = (c: Context, err: unknown): Response => {
    if (!(err instanceof StrataError) && isOutOfSpace(err)) return openaiError(c, 507, "the server's disk is full", 'server_error', null);
    // The store names conversations by their Strata id; the client knows the conv_ one.
    // One wording per kind of missing thing, whoever noticed it, so an answer never tells
    // another user's conversation from a missing one.
    if (err instanceof NotFound && /^conversation \S+ does not exist$/.test(err.message)) err = new NotFound(`Conversation with id '${(c.req.param('id') ?? '').slice(0, 80)}' not found.`);
    if (err instanceof NotFound && /^message \d+ of conversation \S+ does not exist$/.test(err.message)) err = new NotFound(`No item with id '${(c.req.param('item') ?? '').slice(0, 80)}' found in this conversation`);
    if (err instanceof StrataError) {
      if (err.code === 'internal') node.log.error({ err }, 'openai request failed');
      const status = STATUS[err.code];
      if (err.code === 'rate_limited') c.header('Retry-After', String(err.details?.retry_after_seconds ?? 1));
      return openaiError(c, status, err.message, TYPE[status] ?? 'server_error', (err.details?.param as string | undefined) ?? null, CODE[err.code] ?? null);
    }
    node.log.error({ err }, 'openai request failed');
    return openaiError(c, 500, 'The server had an error while processing your request; see its log.', 'server_error', null);
  };

  const caller = (c: Context<AppEnv>, access: 'read' | 'write'): Caller => {
    const who = c.get('caller')!;
    authorize(who, access);
    return who;
  };
  /** The owner a user token is held to (undefined for service and admin tokens). */
  const ownerOf = (who: Caller) => (who.role === 'user' ? (who.userId ?? '') : undefined);
  const body = async (c: Context): Promise<Json> => {
    const b = await readJsonBody(c, limits);
    if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new InvalidInput('the body must be a JSON object');
    return b as Json;
  };

  /**
   * The Strata id a path names, held to the caller's user before anything of the conversation
   * is read: another user's conversation answers exactly like a missing one, as fast, and
   * without loading (or un-archiving into the cache) its messages (review: both leaked).
   */
  const owned = (c: Context<AppEnv>, who: Caller): string => {
    const id = strataId(c.req.param('id')!);
    if (who.role === 'user' && conversations.ownerOf(id) !== who.userId) throw new NotFound(`conversation ${id} does not exist`);
    return id;
  };
  const conversation = async (c: Context<AppEnv>, who: Caller): Promise<Conversation> => conversations.get(owned(c, who));

  app.post('/conversations', async (c) => {
    const who = caller(c, 'write');
    const b = await body(c);
    known(b, ['items', 'metadata'], '');
    const metadata = checkMetadata(b.metadata);
    let owner = metadata?.user_id;
    if (who.role === 'user') {
      if (owner !== undefined && owner !== who.userId) throw new InvalidInput('metadata.user_id must be your own user id', { param: 'metadata.user_id' });
      owner = who.userId!;
    } else if (owner === undefined) throw new InvalidInput('metadata.user_id names the owner of a conversation a service token creates', { param: 'metadata.user_id' });
    const items = b.items === undefined || b.items === null ? [] : newItems(b.items, 'items');
    node.users.get(owner);
    // One write: a crash leaves the conversation with its items or nothing (review: kill -9
    // between two writes left an empty one).
    const conv = await conversations.create(actorOf(who), { user_id: owner, ...(metadata ? { metadata } : {}) }, items);
    return c.json(conversationObject(conv));
  });

  app.get('/conversations/:id', async (c) => c.json(conversationObject(await conversation(c, caller(c, 'read')))));

  app.post('/conversations/:id', async (c) => {
    const who = caller(c, 'write');
    const conv = await conversation(c, who);
    const b = await body(c);
    known(b, ['metadata'], '');
    if (!('metadata' in b)) throw new InvalidInput('metadata is required', { param: 'metadata' });
    const metadata = checkMetadata(b.metadata);
    if (metadata?.user_id !== undefined && metadata.user_id !== conv.user_id) throw new InvalidInput("metadata.user_id cannot move a conversation to another user", { param: 'metadata.user_id' });
    return c.json(conversationObject(await conversations.setMetadata(actorOf(who), conv.id, metadata ?? null, ownerOf(who))));
  });

  app.delete('/conversations/:id', async (c) => {
    const who = caller(c, 'write');
    const conv = await conversation(c, who);
    await conversations.delete(actorOf(who), conv.id);
    return c.json({ id: c.req.param('id'), object: 'conversation.deleted', deleted: true });
  });

  app.post('/conversations/:id/items', async (c) => {
    const who = caller(c, 'write');
    const id = owned(c, who);
    const b = await body(c);
    known(b, ['items'], '');
    const items = newItems(b.items, 'items');
    if (items.length === 0) throw new InvalidInput('items needs at least one item', { param: 'items' });
    const stored = await conversations.append(actorOf(who), id, items, ownerOf(who));
    const hex = id.replaceAll('-', '');
    const data = stored.map((m) => itemJson(hex, { seq: m.seq, role: m.role, content: m.content, ...(m.item ? { item: JSON.parse(m.item) as MessageItem } : {}) }));
    return c.body(listJson(data, false) as Uint8Array<ArrayBuffer>, 200, JSON_TYPE);
  });

  app.get('/conversations/:id/items', async (c) => {
    const who = caller(c, 'read');
    const id = owned(c, who);
    const hex = id.replaceAll('-', '');
    const q = c.req.query();
    const limit = q.limit === undefined ? 20 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100 || !/^\d+$/.test(q.limit ?? '20')) throw new InvalidInput('limit must be an integer from 1 to 100', { param: 'limit' });
    const order = q.order ?? 'desc';
    if (order !== 'asc' && order !== 'desc') throw new InvalidInput("order must be 'asc' or 'desc'", { param: 'order' });
    const after = q.after === undefined ? undefined : seqOf(hex, q.after, 'after');
    return c.body((await itemList(id, hex, { limit, order, after })) as Uint8Array<ArrayBuffer>, 200, JSON_TYPE);
  });

  app.get('/conversations/:id/items/:item', async (c) => {
    const who = caller(c, 'read');
    const id = owned(c, who);
    const hex = id.replaceAll('-', '');
    const seq = seqOf(hex, c.req.param('item')!, 'item_id', true);
    const page = await conversations.messagePage(id, { after: seq - 1, limit: 1 });
    const m = page.json[0] ? (JSON.parse(page.json[0]) as StoredMessage) : undefined;
    if (!m || m.seq !== seq || m.item?.deleted) throw new NotFound(`No item with id '${c.req.param('item')!.slice(0, 80)}' found in this conversation`);
    return c.body(itemJson(hex, m), 200, JSON_TYPE);
  });

  app.delete('/conversations/:id/items/:item', async (c) => {
    const who = caller(c, 'write');
    const conv = await conversation(c, who);
    const seq = seqOf(conv.id.replaceAll('-', ''), c.req.param('item')!, 'item_id', true);
    return c.json(conversationObject(await conversations.deleteMessage(actorOf(who), conv.id, seq, ownerOf(who))));
  });

  /**
   * A page of items as the list JSON. Messages are read through messagePage (the cached tail
   * when hot) in windows; deleted placeholders are skipped, so a window may be followed by the
   * next until `limit` items are found or the conversation ends.
   */
  const itemList = async (id: string, hex: string, q: { limit: number; order: 'asc' | 'desc'; after: number | undefined }): Promise<Buffer> => {
    const items: string[] = [];
    // Rendering a page of large messages (up to the store's 16 MiB page budget) yields to the
    // loop every few milliseconds instead of holding it (review: 0.1 s more than the native read).
    const slices = new Slices();
    let more = false;
    let first: MessagePage | undefined;
    let single = true;
    const key = `${q.order}|${q.after ?? ''}|${q.limit}`;
    /** The first window, and an answer already rendered from it, if any (owned() has checked the owner). */
    const firstWindow = (page: MessagePage): Buffer | undefined => {
      first = page;
      return rendered.get(page)?.get(key);
    };
    /** Adds a message's item (a deleted one is skipped); false once the page is full. */
    const take = async (m: StoredMessage): Promise<boolean> => {
      if (m.item?.deleted) return true;
      if (items.length === q.limit) {
        more = true;
        return false;
      }
      items.push(itemJson(hex, m));
      await slices.tick();
      return true;
    };
    if (q.order === 'asc') {
      let after = q.after ?? 0;
      for (;;) {
        const page = await conversations.messagePage(id, { after, limit: q.limit - items.length + 1 });
        if (!first) {
          const hit = firstWindow(page);
          if (hit) return hit;
        }
        const messages = page.json.map((j) => JSON.parse(j) as StoredMessage);
        for (const m of messages) if (!(await take(m))) break;
        if (more || !page.more || messages.length === 0) {
          more ||= page.more;
          break;
        }
        after = messages[messages.length - 1]!.seq;
        single = false;
      }
    } else {
      // Newest first: the window below `upTo` (exclusive), walking down; a cursor past the end
      // starts at the newest item.
      let upTo = q.after === undefined ? undefined : Math.min(q.after, (await conversations.get(id)).message_count + 1);
      for (;;) {
        const page =
          upTo === undefined
            ? await conversations.messagePage(id, { last: q.limit + 1, limit: q.limit + 1 })
            : await conversations.messagePage(id, { after: Math.max(0, upTo - 1 - (q.limit - items.length + 1)), limit: Math.max(1, Math.min(upTo - 1, q.limit - items.length + 1)) });
        if (!first) {
          const hit = firstWindow(page);
          if (hit) return hit;
        }
        const messages = page.json.map((j) => JSON.parse(j) as StoredMessage).filter((m) => upTo === undefined || m.seq < upTo);
        for (let i = messages.length - 1; i >= 0; i--) if (!(await take(messages[i]!))) break;
        const lowest = messages.length ? messages[0]!.seq : 1;
        if (more || lowest <= 1) break;
        upTo = lowest;
        single = false;
      }
    }
    const out = listJson(items, more);
    // Kept only when one window answered: the page object then stands for the whole answer.
    if (single && first) {
      let byKey = rendered.get(first);
      if (!byKey) rendered.set(first, (byKey = new Map()));
      if (byKey.size < 8) byKey.set(key, out);
    }
    return out;
  };

  // Routes OpenAI has and this does not (listing conversations, other methods): 404 in OpenAI's shape.
  app.all('*', (c) => failure(c, new NotFound(`Invalid URL (${c.req.method} ${c.req.path})`)));
  return app;
}

const TYPE: Partial<Record<number, string>> = { 400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'invalid_request_error', 409: 'invalid_request_error', 413: 'invalid_request_error', 429: 'rate_limit_error' };
const CODE: Partial<Record<string, string>> = { unauthorized: 'invalid_api_key', not_found: 'not_found', rate_limited: 'rate_limit_exceeded', quota_exceeded: 'insufficient_quota', read_only_replica: 'read_only_replica' };

function openaiError(c: Context, status: ContentfulStatusCode, message: string, type: string, param: string | null, code: string | null = null): Response {
  return c.json({ error: { message, type, param, code } }, status);
}

/** The Strata id of a `conv_` id (404 for anything else: ids do not leak). */
function strataId(convId: string): string {
  const m = CONV.exec(convId);
  if (!m) throw new NotFound(`Conversation with id '${convId.slice(0, 80)}' not found.`);
  return m.slice(1, 6).join('-');
}

/** The seq an item id names in this conversation. */
function seqOf(convHex: string, itemId: string, param: string, notFound = false): number {
  const m = ITEM.exec(itemId);
  if (!m || m[1] !== convHex || parseInt(m[2]!, 16) < 1) {
    if (notFound) throw new NotFound(`No item with id '${itemId.slice(0, 80)}' found in this conversation`);
    throw new InvalidInput(`${param} is not an item of this conversation`, { param });
  }
  return parseInt(m[2]!, 16);
}

function conversationObject(conv: Conversation): Json {
  return { id: `conv_${conv.id.replaceAll('-', '')}`, object: 'conversation', created_at: Math.floor(Date.parse(conv.created_at) / 1000), metadata: conv.metadata ?? {} };
}

/** A message as an OpenAI message item (JSON text). */
function itemJson(convHex: string, m: StoredMessage): string {
  const defaultType = m.role === 'assistant' ? 'output_text' : 'input_text';
  const parts: Array<[string, string]> = [];
  if (m.item?.parts) {
    let at = 0;
    for (const [type, length] of m.item.parts) {
      parts.push([type, m.content.slice(at, at + length)]);
      at += length;
    }
  } else parts.push([defaultType, m.content]);
  const content = parts.map(([type, text]) => (type === 'output_text' ? `{"type":"output_text","text":${JSON.stringify(text)},"annotations":[],"logprobs":[]}` : `{"type":${JSON.stringify(type)},"text":${JSON.stringify(text)}}`));
  return `{"type":"message","id":"msg_${convHex}${m.seq.toString(16).padStart(8, '0')}","status":"completed","role":${JSON.stringify(m.role)},"content":[${content.join(',')}]}`;
}

function listJson(items: string[], more: boolean): Buffer {
  const idOf = (j: string | undefined) => (j ? JSON.stringify(/"id":"(msg_[0-9a-f]+)"/.exec(j)![1]) : 'null');
  return Buffer.from(`{"object":"list","data":[${items.join(',')}],"first_id":${idOf(items[0])},"last_id":${idOf(items[items.length - 1])},"has_more":${more}}`);
}

/** Items to append: message items only, each a Strata message (parts joined, their shape kept beside). */
function newItems(raw: unknown, param: string): NewMessage[] {
  if (!Array.isArray(raw)) throw new InvalidInput(`${param} must be a list of items`, { param });
  if (raw.length > MAX_ITEMS) throw new InvalidInput(`${param} holds at most ${MAX_ITEMS} items per call`, { param });
  return raw.map((it, i) => {
    const where = `${param}[${i}]`;
    if (typeof it !== 'object' || it === null || Array.isArray(it)) throw new InvalidInput(`${where} must be an object`, { param: where });
    const o = it as Json;
    if (o.type !== undefined && o.type !== 'message') throw new InvalidInput(`${where}.type: only message items are supported (not ${JSON.stringify(o.type)})`, { param: `${where}.type` });
    known(o, ['type', 'role', 'content', 'id', 'status'], `${where}.`);
    if (typeof o.role !== 'string' || !ROLES.has(o.role)) throw new InvalidInput(`${where}.role must be one of user, assistant, system, developer`, { param: `${where}.role` });
    const role = o.role as Role;
    const defaultType = role === 'assistant' ? 'output_text' : 'input_text';
    let parts: Array<[string, string]>;
    if (typeof o.content === 'string') parts = [[defaultType, o.content]];
    else if (Array.isArray(o.content) && o.content.length > 0) {
      parts = o.content.map((p, j) => {
        const pw = `${where}.content[${j}]`;
        if (typeof p !== 'object' || p === null) throw new InvalidInput(`${pw} must be a content part`, { param: pw });
        const part = p as Json;
        if (typeof part.type !== 'string' || !PART_TYPES.has(part.type)) throw new InvalidInput(`${pw}.type: only input_text and output_text parts are supported`, { param: `${pw}.type` });
        known(part, ['type', 'text', 'annotations', 'logprobs'], `${pw}.`);
        if (typeof part.text !== 'string') throw new InvalidInput(`${pw}.text must be a string`, { param: `${pw}.text` });
        return [part.type, part.text];
      });
    } else throw new InvalidInput(`${where}.content must be a string or a non-empty list of parts`, { param: `${where}.content` });
    const content = parts.map(([, t]) => t).join('');
    if (content.length > MAX_CONTENT_CHARS) throw new InvalidInput(`${where}.content is longer than ${MAX_CONTENT_CHARS} characters`, { param: `${where}.content` });
    const plain = parts.length === 1 && parts[0]![0] === defaultType;
    return { role, content, ...(plain ? {} : { item: { parts: parts.map(([type, text]): [string, number] => [type, text.length]) } }) };
  });
}

/** OpenAI's metadata: up to 16 pairs, keys up to 64 characters, string values up to 512. */
function checkMetadata(raw: unknown): Record<string, string> | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new InvalidInput('metadata must be an object of string pairs', { param: 'metadata' });
  const entries = Object.entries(raw as Json);
  if (entries.length > MAX_METADATA) throw new InvalidInput(`metadata holds at most ${MAX_METADATA} pairs`, { param: 'metadata' });
  for (const [k, v] of entries) {
    if (k.length > 64) throw new InvalidInput('metadata keys are at most 64 characters', { param: 'metadata' });
    if (typeof v !== 'string' || v.length > 512) throw new InvalidInput(`metadata.${k.slice(0, 64)} must be a string of at most 512 characters`, { param: `metadata.${k.slice(0, 64)}` });
  }
  return raw as Record<string, string>;
}

/** Refuses fields it does not know (a typo is a 400, never silently ignored). */
function known(o: Record<string, unknown>, keys: string[], prefix: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new InvalidInput(`unknown field ${prefix}${k.slice(0, 64)}`, { param: `${prefix}${k.slice(0, 64)}` });
}
