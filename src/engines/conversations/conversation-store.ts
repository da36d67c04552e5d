import { randomUUID } from 'node:crypto';
import { Packr } from 'msgpackr';
import { FieldCipher } from '../crypto/field-cipher.js';
import { PiiScanner } from '../privacy/pii-scanner.js';
import type { CacheTier } from '../cache/cache-tier.js';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import type { ConversationArchive } from './conversation-archive.js';

// Conversations and their messages. SQLite is the truth; the cache holds, per conversation,
// its metadata and its most recent messages (sliding TTL), which is what a chat front end
// reads before every model call.
//
// Ordering: appends run inside the group-commit writer, which runs calls one after another,
// so `last_seq + 1` is always the next number and seq has no gaps even under concurrency.
// Cache coherence: every cache write is issued synchronously right after the SQLite state it
// copies was read (no await in between), and one connection delivers commands in order, so a
// slower reader can never put an older tail over a newer one.

export const conversationMigrations: Migration[] = [
  {
    engine: 'conversations',
    version: 1,
    name: 'conversations, messages and archive segments',
    sql: `
      CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        title TEXT,
        model TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0,
        token_count INTEGER NOT NULL DEFAULT 0,
        -- When set, the messages live in this object of the archive tier, not in messages.
        archive_key TEXT,
        archived_at TEXT
      ) STRICT;
      CREATE INDEX conversations_by_user ON conversations (user_id, created_at DESC, id DESC);
      CREATE INDEX conversations_by_activity ON conversations (updated_at) WHERE archive_key IS NULL;
      CREATE TABLE messages (
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
      ) STRICT, WITHOUT ROWID;
      -- Every archive object ever written, live or kept for compliance after its conversation
      -- was deleted; the job deletes the object once delete_after has passed.
      CREATE TABLE conversation_segments (
        key TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        messages INTEGER NOT NULL,
        raw_bytes INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        delete_after TEXT
      ) STRICT;
      CREATE INDEX conversation_segments_expiry ON conversation_segments (delete_after) WHERE delete_after IS NOT NULL;
      CREATE INDEX conversation_segments_by_user ON conversation_segments (user_id);
    `,
  },
  {
    engine: 'conversations',
    version: 2,
    name: 'pii tags',
    // Kinds of personal data seen in the conversation's messages (comma-separated), for review and retention.
    sql: "ALTER TABLE conversations ADD COLUMN pii TEXT NOT NULL DEFAULT ''",
  },
  {
    engine: 'conversations',
    version: 3,
    name: 'conversation metadata, message items',
    // metadata: up to 16 string pairs (OpenAI's Conversations API), sealed with the owner's key
    // like the title. item: how a message reads as an OpenAI item when that is not its default
    // (several content parts, or deleted through that API), as JSON; NULL for nearly all.
    sql: `
      ALTER TABLE conversations ADD COLUMN metadata TEXT;
      ALTER TABLE messages ADD COLUMN item TEXT;
    `,
  },
];

export const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;
export type Role = (typeof ROLES)[number];
export const MAX_MESSAGES_PER_APPEND = 1000;

export interface Conversation {
  id: string;
  user_id: string;
  title: string | null;
  model: string | null;
  created_at: string;
  updated_at: string;
  message_count: number;
  token_count: number;
  archived: boolean;
  /** Kinds of personal data found in its messages (email, phone, credit_card, ssn, ip, api_key). */
  pii: string[];
  /** String pairs set through the OpenAI Conversations API (or null). */
  metadata: Record<string, string> | null;
}

export interface Message {
  seq: number;
  role: Role;
  content: string;
  tokens: number;
  created_at: string;
  /** MessageItem as JSON, when the message is not a plain one (see the v3 migration). */
  item?: string | null | undefined;
}

/**
 * What an OpenAI item needs beyond role and content: the content's parts as [type, length]
 * (content is their texts joined), or that it was deleted (content emptied, seq kept, so seq
 * numbers stay gapless for every reader).
 */
export interface MessageItem {
  parts?: Array<[string, number]>;
  deleted?: true;
}

export interface NewMessage {
  role: Role;
  content: string;
  tokens?: number | undefined;
  item?: MessageItem | undefined;
}

interface ConversationRow {
  id: string;
  user_id: string;
  title: string | null;
  model: string | null;
  created_at: string;
  updated_at: string;
  message_count: number;
  token_count: number;
  archive_key: string | null;
  archived_at: string | null;
  pii?: string;
  metadata?: string | null;
}

/**
 * What the cache holds per conversation: metadata and the last messages in seq order, each
 * already in its wire form (one JSON text per message, made by SQLite's json_object). A hot
 * read then decodes a list of strings and joins a slice of it — no per-field decoding, no
 * JSON.stringify — which is most of what a read costs.
 */
interface CachedTail {
  c: ConversationRow;
  /** JSON of messages first, first + 1, ... */
  j: string[];
  first: number;
  /** True when j starts at seq 1, i.e. holds the whole conversation. */
  all: boolean;
}

/** A page of messages as JSON texts with consecutive seq numbers from `first`. */
export interface MessagePage {
  json: string[];
  first: number;
  more: boolean;
  /** The conversation's owner, for the tenant guard. */
  user_id: string;
  /**
   * The HTTP answer, rendered by the first caller that sends this page and kept with it: a page
   * answered from a cached tail is the same object for every read until the tail changes.
   */
  rendered?: Buffer;
}

const MESSAGE_JSON =
  "CASE WHEN item IS NULL THEN json_object('seq', seq, 'role', role, 'content', content, 'tokens', tokens, 'created_at', created_at) ELSE json_object('seq', seq, 'role', role, 'content', content, 'tokens', tokens, 'created_at', created_at, 'item', json(item)) END";

/** A message's wire JSON, field for field what MESSAGE_JSON makes in SQLite. */
export function messageJson(m: Message, content = m.content): string {
  const out: Record<string, unknown> = { seq: m.seq, role: m.role, content, tokens: m.tokens, created_at: m.created_at };
  if (m.item) out.item = JSON.parse(m.item);
  return JSON.stringify(out);
}

/**
 * Byte budgets (of message JSON) that keep the work of one request bounded whatever a
 * conversation holds. Messages may be 1 MiB each and JSON escaping can make that 6 MB, so a
 * tail of "the last 100" could be hundreds of MB, rebuilt on every append and unpacked on every
 * read; a page of 1000 could pass V8's largest string and fail. The cached tail keeps the newest
 * messages that fit TAIL_MAX_BYTES; a page stops once it passes PAGE_MAX_BYTES (always holding
 * at least one message), and says there is more.
 */
export const TAIL_MAX_BYTES = 1024 * 1024;
export const PAGE_MAX_BYTES = 16 * 1024 * 1024;
/** Rows fetched per statement while filling a budget. */
const CHUNK = 16;

const packr = new Packr({ useRecords: false });

export interface ConversationCacheOptions {
  cachedMessages: number;
  ttlSeconds: number;
}

export class ConversationStore {
  readonly created: ChangeType<ConversationRow>;
  readonly appended: ChangeType<{ conversation_id: string; messages: Message[]; updated_at: string; pii?: string[] }>;
  readonly deleted: ChangeType<{ id: string }>;
  readonly restored: ChangeType<{ conversation_id: string; messages: Message[] }>;
  private readonly metadataSet: ChangeType<{ id: string; metadata: string | null; updated_at: string }>;
  private readonly messageDeleted: ChangeType<{ conversation_id: string; seq: number; updated_at: string }>;
  private readonly userErased: ChangeType<{ user_id: string }>;
  archive: ConversationArchive | undefined;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly cache: CacheTier,
    private readonly options: ConversationCacheOptions,
    /** Seals message content and titles with the owner's key (identity when encryption is off). */
    private readonly cipher = new FieldCipher(undefined),
    private readonly scanner = new PiiScanner(),
    /** Throws NotFound unless the user exists; asked inside the write (an erasure may run meanwhile). */
    private readonly requireUser: (userId: string) => void = () => undefined,
  ) {
    this.created = changes.define<ConversationRow>('conversations', 'create', (db, c) => {
      db.prepare(
        `INSERT INTO conversations (id, user_id, title, model, created_at, updated_at, message_count, token_count, metadata)
         VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)`,
      ).run(c.id, c.user_id, c.title, c.model, c.created_at, c.updated_at, c.metadata ?? null);
    });
    this.metadataSet = changes.define('conversations', 'set_metadata', (db, p) => {
      db.prepare('UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ?').run(p.metadata, p.updated_at, p.id);
    });
    // The message stays as a placeholder so seq numbers stay gapless; its content goes.
    this.messageDeleted = changes.define('conversations', 'delete_message', (db, p) => {
      const tokens = db.prepare<{ tokens: number }>('SELECT tokens FROM messages WHERE conversation_id = ? AND seq = ?').get(p.conversation_id, p.seq)?.tokens ?? 0;
      db.prepare(`UPDATE messages SET content = '', tokens = 0, item = '{"deleted":true}' WHERE conversation_id = ? AND seq = ?`).run(p.conversation_id, p.seq);
      db.prepare('UPDATE conversations SET token_count = token_count - ?, updated_at = ? WHERE id = ?').run(tokens, p.updated_at, p.conversation_id);
    });
    this.appended = changes.define('conversations', 'append', (db, p) => {
      insertMessages(db, p.conversation_id, p.messages);
      if (p.pii?.length) {
        const current = db.prepare<{ pii: string | null }>('SELECT pii FROM conversations WHERE id = ?').get(p.conversation_id)?.pii ?? null;
        db.prepare('UPDATE conversations SET pii = ? WHERE id = ?').run(mergePii(current, p.pii), p.conversation_id);
      }
      const tokens = p.messages.reduce((sum, m) => sum + m.tokens, 0);
      db.prepare(
        'UPDATE conversations SET message_count = message_count + ?, token_count = token_count + ?, updated_at = ? WHERE id = ?',
      ).run(p.messages.length, tokens, p.updated_at, p.conversation_id);
    });
    // Brings an archived conversation back into SQLite (the user wrote to it again). The
    // payload carries the messages, so a replica replays it without the archive object.
    this.restored = changes.define('conversations', 'restore', (db, p) => {
      insertMessages(db, p.conversation_id, p.messages);
      db.prepare('UPDATE conversations SET archive_key = NULL, archived_at = NULL WHERE id = ?').run(p.conversation_id);
    });
    this.deleted = changes.define('conversations', 'delete', (db, p) => {
      db.prepare('DELETE FROM conversations WHERE id = ?').run(p.id);
    });
    this.userErased = changes.define('conversations', 'erase_user', (db, p) => {
      db.prepare('DELETE FROM conversations WHERE user_id = ?').run(p.user_id);
      db.prepare('DELETE FROM conversation_segments WHERE user_id = ?').run(p.user_id);
    });
  }

  /**
   * Starts a conversation; with `messages`, they are its first ones, in the same write (so a
   * crash leaves both or neither: OpenAI's create with items).
   */
  async create(
    actor: Actor,
    input: { user_id: string; title?: string | undefined; model?: string | undefined; id?: string | undefined; metadata?: Record<string, string> | undefined },
    messages: NewMessage[] = [],
  ): Promise<Conversation> {
    if (messages.length > MAX_MESSAGES_PER_APPEND) throw new InvalidInput(`at most ${MAX_MESSAGES_PER_APPEND} messages per call`);
    const pii = messages.length ? await this.scanner.kinds(messages.map((m) => m.content)) : [];
    return this.writer.write(actor, (tx) => {
      this.requireUser(input.user_id);
      const id = input.id ?? randomUUID();
      if (this.row(id)) throw new Conflict(`a conversation with id ${id} already exists`);
      const now = new Date().toISOString();
      const row: ConversationRow = {
        id,
        user_id: input.user_id,
        title: input.title === undefined ? null : this.cipher.seal(tx, input.user_id, input.title),
        model: input.model ?? null,
        created_at: now,
        updated_at: now,
        message_count: 0,
        token_count: 0,
        archive_key: null,
        archived_at: null,
        metadata: input.metadata === undefined ? null : this.cipher.seal(tx, input.user_id, JSON.stringify(input.metadata)),
      };
      tx.apply(this.created, row);
      tx.audit('conversations.create', `conversation:${id}`, { user_id: input.user_id });
      if (messages.length) {
        const stored: Message[] = messages.map((m, i) => ({
          seq: i + 1,
          role: m.role,
          content: this.cipher.seal(tx, input.user_id, m.content),
          tokens: m.tokens ?? 0,
          created_at: now,
          ...(m.item ? { item: JSON.stringify(m.item) } : {}),
        }));
        tx.apply(this.appended, { conversation_id: id, messages: stored, updated_at: now, ...(pii.length ? { pii } : {}) });
      }
      const after: ConversationRow = { ...row, message_count: messages.length, token_count: messages.reduce((n, m) => n + (m.tokens ?? 0), 0), pii: [...new Set(pii)].sort().join(',') };
      return { ...publicConversation(after), title: input.title ?? null, metadata: input.metadata ?? null };
    });
  }

  /** Metadata; served from the cache when the conversation is hot. */
  async get(id: string): Promise<Conversation> {
    const cached = await this.cachedTail(id);
    return this.public(cached ? cached.c : this.requireRow(id));
  }

  /** The owner of a conversation, for the tenant guard (NotFound when it does not exist). */
  ownerOf(id: string): string {
    const row = this.db.prepare<{ user_id: string }>('SELECT user_id FROM conversations WHERE id = ?').get(id);
    if (!row) throw new NotFound(`conversation ${id} does not exist`);
    return row.user_id;
  }

  list(userId: string, limit: number, after?: { created_at: string; id: string }): Conversation[] {
    const rows = after
      ? this.db
          .prepare<ConversationRow>(
            `SELECT * FROM conversations WHERE user_id = ? AND (created_at, id) < (?, ?)
             ORDER BY created_at DESC, id DESC LIMIT ?`,
          )
          .all(userId, after.created_at, after.id, limit)
      : this.db
          .prepare<ConversationRow>('SELECT * FROM conversations WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?')
          .all(userId, limit);
    return rows.map((r) => this.public(r));
  }

  /**
   * Appends messages. `owner`, when given, is the only user whose conversation this may be
   * (the tenant guard, checked inside the write, so another user's id reads as not found).
   */
  async append(actor: Actor, conversationId: string, input: NewMessage[], owner?: string): Promise<Message[]> {
    if (input.length === 0) throw new InvalidInput('at least one message is required');
    if (input.length > MAX_MESSAGES_PER_APPEND) throw new InvalidInput(`at most ${MAX_MESSAGES_PER_APPEND} messages per call`);
    // Tagged from the plaintext, before sealing and outside the transaction (a long text is
    // scanned on a worker thread): the tag names kinds of data, never the data.
    const pii = await this.scanner.kinds(input.map((m) => m.content));
    // The tail before this append: extended in the write instead of re-read from SQLite, and,
    // when it shows a hot conversation, the reason not to read the row before the write.
    const cached = await this.cachedTail(conversationId).catch(() => undefined);
    const hot = cached !== undefined && cached.c.archive_key === null && (owner === undefined || cached.c.user_id === owner);
    // Writing to an archived conversation brings it back first; the archive is read outside
    // the transaction (it is I/O), and the write checks it is still the same archive. A stale
    // cached tail can hide an archive: then the write finds it, and this reads it and retries.
    let archived = hot ? undefined : await this.archiveOf(this.requireRow(conversationId, owner));
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.appendOnce(actor, conversationId, input, owner, pii, cached, archived);
      } catch (err) {
        if (!(err instanceof ArchivedMeanwhile) || attempt > 0 || archived) throw err instanceof ArchivedMeanwhile ? new Conflict(err.message) : err;
        archived = await this.archiveOf(this.requireRow(conversationId, owner));
      }
    }
  }

  private async archiveOf(row: ConversationRow): Promise<{ key: string; messages: Message[] } | undefined> {
    return row.archive_key && this.archive ? { key: row.archive_key, messages: await this.archive.read(row.archive_key) } : undefined;
  }

  private async appendOnce(
    actor: Actor,
    conversationId: string,
    input: NewMessage[],
    owner: string | undefined,
    pii: string[],
    cached: CachedTail | undefined,
    archived: { key: string; messages: Message[] } | undefined,
  ): Promise<Message[]> {
    const { items, tail } = await this.writer.write(actor, (tx) => {
      const row = this.requireRow(conversationId, owner);
      // An earlier append in this transaction (a busy conversation gets several per commit)
      // left a newer tail than the cache holds. Messages are append-only under seq, so a tail
      // that ends at the current count is exact; any other is ignored.
      const prior = (tx.batch.get(tailKey(conversationId)) as CachedTail | undefined) ?? cached;
      // A message deleted or metadata set since the tail was read leaves the count alone but
      // moves updated_at: such a tail is stale too.
      const extendable =
        prior !== undefined && !row.archive_key && prior.c.message_count === row.message_count && prior.c.updated_at === row.updated_at && prior.c.user_id === row.user_id;
      if (row.archive_key) {
        if (!archived || archived.key !== row.archive_key) throw new ArchivedMeanwhile();
        tx.apply(this.restored, { conversation_id: row.id, messages: archived.messages });
      }
      const now = new Date().toISOString();
      let seq = row.message_count;
      const messages: Message[] = input.map((m) => ({ seq: ++seq, role: m.role, content: m.content, tokens: m.tokens ?? 0, created_at: now, ...(m.item ? { item: JSON.stringify(m.item) } : {}) }));
      const stored = this.cipher.enabled ? messages.map((m) => ({ ...m, content: this.cipher.seal(tx, row.user_id, m.content) })) : messages;
      tx.apply(this.appended, { conversation_id: conversationId, messages: stored, updated_at: now, ...(pii.length ? { pii } : {}) });
      // What the applier made of the row, without reading it back (a restore changed it too).
      const after: ConversationRow = row.archive_key
        ? this.requireRow(conversationId)
        : { ...row, message_count: seq, token_count: row.token_count + messages.reduce((n, m) => n + m.tokens, 0), updated_at: now, pii: pii.length ? mergePii(row.pii, pii) : row.pii };
      const tail = extendable ? extendTail(prior, after, messages, this.options.cachedMessages) : this.tailFromSql(after);
      tx.batch.set(tailKey(conversationId), tail);
      return { items: messages, tail };
    });
    this.cacheTail(conversationId, tail);
    return items;
  }

  /**
   * Messages in seq order: after a seq (paging forward), or the last `last` of them.
   * Hot conversations are answered from the cache; archived ones from their archive object.
   */
  async messagePage(conversationId: string, query: MessageQuery, attempt = 0): Promise<MessagePage> {
    const cached = await this.cachedTail(conversationId);
    if (cached) {
      // Pages of a cached tail are kept with it (a tail is immutable; an append makes a new one).
      let pages = this.pagesOfTail.get(cached);
      const key = `${query.after ?? ''}|${query.last ?? ''}|${query.limit}`;
      const seen = pages?.get(key);
      if (seen) return seen;
      const answer = answerFrom(cached, query);
      if (answer) {
        if (!pages) this.pagesOfTail.set(cached, (pages = new Map()));
        if (pages.size < 8) pages.set(key, answer);
        return answer;
      }
    }
    const row = this.requireRow(conversationId);
    if (row.archive_key && this.archive) {
      const all = await this.archive.read(row.archive_key);
      // The read awaited: a write may have changed the conversation meanwhile (an item deleted
      // brings it back from the archive). Cached only if the row is still the one read, so a
      // stale tail never lands over a newer one (review: a deleted item's text came back);
      // otherwise read again, from where it lives now.
      const now = this.row(conversationId);
      if (!now || now.archive_key !== row.archive_key || now.updated_at !== row.updated_at) {
        if (attempt < 2) return this.messagePage(conversationId, query, attempt + 1);
        throw new Conflict(`conversation ${conversationId} changed while it was read; retry`);
      }
      const whole: CachedTail = { c: row, j: all.map((m) => messageJson(m, this.openContent(row.user_id, m.content))), first: 1, all: true };
      this.cacheTail(conversationId, whole);
      return answerFrom(whole, query)!;
    }
    const tail = this.tailFromSql(row);
    this.cacheTail(conversationId, tail);
    const fromTail = answerFrom(tail, query);
    if (fromTail) return fromTail;
    if (query.last !== undefined) {
      // The newest `last` messages that fit the page budget.
      const want = Math.min(query.last, query.limit);
      const newest = this.newestFirst(conversationId, row.message_count, want, PAGE_MAX_BYTES);
      return { json: this.opened(row.user_id, newest.reverse()), first: row.message_count - newest.length + 1, more: false, user_id: row.user_id };
    }
    const after = query.after ?? 0;
    const page = this.oldestFirst(conversationId, after, query.limit, PAGE_MAX_BYTES);
    return { json: this.opened(row.user_id, page.json), first: after + 1, more: page.more, user_id: row.user_id };
  }

  /** Message JSON after `after`, in seq order: up to `limit` messages and about `maxBytes`. */
  private oldestFirst(conversationId: string, after: number, limit: number, maxBytes: number): { json: string[]; more: boolean } {
    const stmt = this.db.prepare<{ j: string }>(`SELECT ${MESSAGE_JSON} AS j FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?`);
    const json: string[] = [];
    let bytes = 0;
    for (;;) {
      const rows = stmt.all(conversationId, after + json.length, CHUNK);
      for (const { j } of rows) {
        if (json.length === limit || (json.length > 0 && bytes + j.length > maxBytes)) return { json, more: true };
        json.push(j);
        bytes += j.length;
      }
      if (rows.length < CHUNK) return { json, more: false };
    }
  }

  /** Message JSON up to seq `upTo`, newest first: up to `limit` messages and about `maxBytes`. */
  private newestFirst(conversationId: string, upTo: number, limit: number, maxBytes: number): string[] {
    const stmt = this.db.prepare<{ j: string }>(`SELECT ${MESSAGE_JSON} AS j FROM messages WHERE conversation_id = ? AND seq <= ? ORDER BY seq DESC LIMIT ?`);
    const json: string[] = [];
    let bytes = 0;
    for (;;) {
      const rows = stmt.all(conversationId, upTo - json.length, CHUNK);
      for (const { j } of rows) {
        if (json.length === limit || (json.length > 0 && bytes + j.length > maxBytes)) return json;
        json.push(j);
        bytes += j.length;
      }
      if (rows.length < CHUNK) return json;
    }
  }

  /** Replaces the conversation's metadata (null clears it); `owner` as for append. */
  async setMetadata(actor: Actor, conversationId: string, metadata: Record<string, string> | null, owner?: string): Promise<Conversation> {
    const { row, tail } = await this.writer.write(actor, (tx) => {
      const row = this.requireRow(conversationId, owner);
      const now = new Date().toISOString();
      const sealed = metadata === null ? null : this.cipher.seal(tx, row.user_id, JSON.stringify(metadata));
      tx.apply(this.metadataSet, { id: conversationId, metadata: sealed, updated_at: now });
      tx.audit('conversations.set_metadata', `conversation:${conversationId}`);
      const after: ConversationRow = { ...row, metadata: sealed, updated_at: now };
      return { row: after, tail: this.retail(tx, after) };
    });
    await this.recache(conversationId, tail);
    return this.public(row);
  }

  /**
   * Deletes one message's content (OpenAI's item delete). The row stays, emptied and marked
   * deleted, so seq numbers stay gapless; an archived conversation is brought back first.
   */
  async deleteMessage(actor: Actor, conversationId: string, seq: number, owner?: string): Promise<Conversation> {
    let archived = await this.archiveOf(this.requireRow(conversationId, owner));
    for (let attempt = 0; ; attempt++) {
      try {
        const { row, tail, segments } = await this.writer.write(actor, (tx) => {
          const row = this.requireRow(conversationId, owner);
          if (row.archive_key) {
            if (!archived || archived.key !== row.archive_key) throw new ArchivedMeanwhile();
            tx.apply(this.restored, { conversation_id: row.id, messages: archived.messages });
          }
          const m = this.db.prepare<{ item: string | null }>('SELECT item FROM messages WHERE conversation_id = ? AND seq = ?').get(conversationId, seq);
          if (!m || m.item?.includes('"deleted"')) throw new NotFound(`message ${seq} of conversation ${conversationId} does not exist`);
          tx.apply(this.messageDeleted, { conversation_id: conversationId, seq, updated_at: new Date().toISOString() });
          // Archive objects of earlier states still hold the message: they go too, as when the
          // conversation is deleted (the messages all live in SQLite again by now).
          const segments = this.archive ? this.segmentKeys(conversationId) : [];
          for (const key of segments) tx.apply(this.archive!.segmentDropped, { key });
          tx.audit('conversations.delete_message', `conversation:${conversationId}`, { seq, dropped_segments: segments.length });
          const after = this.requireRow(conversationId);
          return { row: after, tail: this.retail(tx, after), segments };
        });
        await this.recache(conversationId, tail);
        // Rows first, objects after (as delete does): a crash between leaves an orphan object for the sweep.
        if (this.archive) for (const key of segments) await this.archive.deleteObject(key);
        return this.public(row);
      } catch (err) {
        if (!(err instanceof ArchivedMeanwhile) || attempt > 0) throw err instanceof ArchivedMeanwhile ? new Conflict(err.message) : err;
        archived = await this.archiveOf(this.requireRow(conversationId, owner));
      }
    }
  }

  /** Inside a write that changed a conversation: its new tail (read from SQLite), kept for later appends in the batch. */
  private retail(tx: Tx, row: ConversationRow): CachedTail | undefined {
    if (row.archive_key) return undefined;
    const tail = this.tailFromSql(row);
    tx.batch.set(tailKey(row.id), tail);
    return tail;
  }

  /** After such a write: the new tail into the cache, or (archived) the entry dropped. */
  private async recache(conversationId: string, tail: CachedTail | undefined): Promise<void> {
    if (tail) this.cacheTail(conversationId, tail);
    else await this.cache.delete([cacheKey(conversationId)]);
  }

  async delete(actor: Actor, conversationId: string): Promise<void> {
    const segments = await this.writer.write(actor, (tx) => {
      this.requireRow(conversationId);
      const keys = this.segmentKeys(conversationId);
      tx.apply(this.deleted, { id: conversationId });
      if (this.archive) for (const key of keys) tx.apply(this.archive.segmentDropped, { key });
      tx.audit('conversations.delete', `conversation:${conversationId}`);
      return keys;
    });
    await this.cache.delete([cacheKey(conversationId)]);
    // Rows first, objects after: a crash in between leaves an orphan object, never a row
    // pointing at nothing. The archive job's sweep removes such orphans.
    if (this.archive) for (const key of segments) await this.archive.deleteObject(key);
  }

  /**
   * Inside an erasure: every conversation, message and archive segment row of the user
   * (compliance copies included). Returns what the caller must clear once committed.
   */
  eraseUser(tx: Tx, userId: string): { conversationIds: string[]; segmentKeys: string[] } {
    const conversationIds = this.db.prepare<{ id: string }>('SELECT id FROM conversations WHERE user_id = ?').all(userId).map((r) => r.id);
    const segmentKeys = this.db.prepare<{ key: string }>('SELECT key FROM conversation_segments WHERE user_id = ?').all(userId).map((r) => r.key);
    tx.apply(this.userErased, { user_id: userId });
    return { conversationIds, segmentKeys };
  }

  /** Drops a conversation's cache entry (after the archive job or an erasure changed it). */
  forget(conversationId: string): Promise<void> {
    return this.cache.delete([cacheKey(conversationId)]);
  }

  segmentKeys(conversationId: string): string[] {
    return this.db
      .prepare<{ key: string }>('SELECT key FROM conversation_segments WHERE conversation_id = ?')
      .all(conversationId)
      .map((r) => r.key);
  }

  private readonly pagesOfTail = new WeakMap<CachedTail, Map<string, MessagePage>>();

  private cacheTail(conversationId: string, tail: CachedTail): void {
    let size = 256;
    for (const j of tail.j) size += j.length;
    void this.cache.setDecoded(cacheKey(conversationId), tail, () => packr.pack(tail), size, this.options.ttlSeconds);
  }

  private async cachedTail(id: string): Promise<CachedTail | undefined> {
    if (this.options.cachedMessages === 0) return undefined;
    return this.cache.getDecoded('conversations', cacheKey(id), (buf) => packr.unpack(buf) as CachedTail, { slideTtlSeconds: this.options.ttlSeconds });
  }

  /** The newest messages that fit the tail's budget (none, when the newest alone does not). */
  private tailFromSql(row: ConversationRow): CachedTail {
    const j = this.newestFirst(row.id, row.message_count, this.options.cachedMessages, TAIL_MAX_BYTES).reverse();
    if (j.length === 1 && j[0]!.length > TAIL_MAX_BYTES) j.length = 0;
    const first = row.message_count - j.length + 1;
    return { c: row, j: this.opened(row.user_id, j), first, all: first === 1 };
  }

  /** Message JSON texts (from json_object) with their content unsealed; as is when encryption is off. */
  private opened(userId: string, json: string[]): string[] {
    if (!this.cipher.enabled) return json;
    return json.map((text) => {
      const m = JSON.parse(text) as Message;
      m.content = this.openContent(userId, m.content);
      return JSON.stringify(m);
    });
  }

  /** Sealed content of an erased user (whose key is gone) reads as empty; the rows go with it. */
  openContent(userId: string, stored: string): string {
    return this.cipher.open(userId, stored) ?? '';
  }

  private public(row: ConversationRow): Conversation {
    const c = publicConversation(row);
    if (row.title !== null) c.title = this.cipher.open(row.user_id, row.title) ?? null;
    if (row.metadata) {
      const opened = this.cipher.open(row.user_id, row.metadata);
      c.metadata = opened ? (JSON.parse(opened) as Record<string, string>) : null;
    }
    return c;
  }

  row(id: string): ConversationRow | undefined {
    return this.db.prepare<ConversationRow>('SELECT * FROM conversations WHERE id = ?').get(id);
  }

  /** The row; NotFound when missing or, with `owner`, when another user's (ids do not leak). */
  private requireRow(id: string, owner?: string): ConversationRow {
    const row = this.row(id);
    if (!row || (owner !== undefined && row.user_id !== owner)) throw new NotFound(`conversation ${id} does not exist`);
    return row;
  }
}

export interface MessageQuery {
  after?: number | undefined;
  limit: number;
  last?: number | undefined;
}

/** Answers a read from a cached tail when the tail covers it, else undefined. */
function answerFrom(tail: CachedTail, query: MessageQuery): MessagePage | undefined {
  const total = tail.c.message_count;
  const user_id = tail.c.user_id;
  if (query.last !== undefined) {
    const want = Math.min(query.last, query.limit, total);
    if (!tail.all && want > tail.j.length) return undefined;
    return { json: tail.j.slice(tail.j.length - want), first: total - want + 1, more: false, user_id };
  }
  const after = query.after ?? 0;
  if (!tail.all && after + 1 < tail.first) return undefined;
  const from = Math.max(0, after + 1 - tail.first);
  const json = tail.j.slice(from, from + query.limit + 1);
  return { json: json.slice(0, query.limit), first: tail.first + from, more: json.length > query.limit, user_id };
}

/** Thrown inside an append's write when the conversation turned out archived; append() retries. */
class ArchivedMeanwhile extends Error {
  constructor() {
    super('the conversation was archived while this write waited; retry');
  }
}

/** The conversation's PII tag after adding kinds: sorted, each once. */
function mergePii(current: string | null | undefined, add: readonly string[]): string {
  return [...new Set([...(current ?? '').split(',').filter(Boolean), ...add])].sort().join(',');
}

/**
 * The tail after an append, built from the tail before it and the appended messages (in
 * plaintext, as a tail holds them): the same messages tailFromSql would pick — the newest that
 * fit the count and byte budgets — without reading up to a hundred rows back on every append.
 */
function extendTail(prior: CachedTail, row: ConversationRow, added: Message[], maxMessages: number): CachedTail {
  const j = prior.j.concat(added.map((m) => messageJson(m)));
  let keep = 0;
  let bytes = 0;
  for (let i = j.length - 1; i >= 0 && keep < maxMessages; i--) {
    if (keep > 0 && bytes + j[i]!.length > TAIL_MAX_BYTES) break;
    bytes += j[i]!.length;
    keep++;
  }
  const kept = j.slice(j.length - keep);
  if (kept.length === 1 && kept[0]!.length > TAIL_MAX_BYTES) kept.length = 0;
  const first = row.message_count - kept.length + 1;
  return { c: row, j: kept, first, all: first === 1 };
}

function insertMessages(db: SqlDatabase, conversationId: string, messages: Message[]): void {
  const insert = db.prepare('INSERT INTO messages (conversation_id, seq, role, content, tokens, created_at, item) VALUES (?, ?, ?, ?, ?, ?, ?)');
  for (const m of messages) insert.run(conversationId, m.seq, m.role, m.content, m.tokens, m.created_at, m.item ?? null);
}

function tailKey(id: string): string {
  return `conversations.tail:${id}`;
}

function cacheKey(id: string): string {
  return `conv:${id}`;
}

export function publicConversation(r: ConversationRow): Conversation {
  return {
    id: r.id,
    user_id: r.user_id,
    title: r.title,
    model: r.model,
    created_at: r.created_at,
    updated_at: r.updated_at,
    message_count: r.message_count,
    token_count: r.token_count,
    archived: r.archive_key !== null,
    pii: r.pii ? r.pii.split(',') : [],
    metadata: null,
  };
}

export type { ConversationRow };
