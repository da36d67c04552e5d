import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb } from 'node:zlib';
import { Packr } from 'msgpackr';
import { getReferenced, type ObjectStore } from '../objects/object-store.js';
import { ObjectMissing } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Writer } from '../sql/writer.js';
import type { ConversationRow, ConversationStore, Message } from './conversation-store.js';

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb);

// The conversation archive and retention job.
//
// 1. Conversations idle longer than their tier's hot window are packed (MessagePack, gzip)
//    into one object in the archive tier, then their message rows are deleted. Blob before
//    reference: the object is complete before the transaction that points at it commits, and
//    that transaction re-checks that no message arrived meanwhile.
// 2. Conversations idle longer than their tier's retention are deleted. When a compliance
//    retention is configured, their archive segment outlives them until delete_after.
// 3. Segments past delete_after are deleted: row first, then object.
//
// Every step reads what to do from SQLite, so the job is idempotent and a crash at any point
// is resumed by the next run: at worst an object was written whose row never committed, and
// the next run writes the same key again (keys are deterministic) or the sweep removes it.

export interface TierPolicy {
  hotDays: number;
  retentionDays: number;
}

export interface ArchiveOptions {
  complianceRetentionDays: number;
  batch: number;
  /** The shortest hot window and retention of any tier: the scan stops at younger rows. */
  shortest: TierPolicy;
}

export interface ArchiveEvents {
  /** An archive object the rows reference is gone from the tier (data loss). */
  missing?(key: string): void;
  archived?(conversations: number, rawBytes: number, storedBytes: number): void;
  deleted?(conversations: number): void;
  progress?(step: string, done: number): void;
}

export interface ArchiveRunResult {
  archived: number;
  raw_bytes: number;
  stored_bytes: number;
  /** raw / stored over this run; null when nothing was archived. */
  compression_ratio: number | null;
  deleted: number;
  segments_expired: number;
}

interface ArchivePayload {
  conversation_id: string;
  user_id: string;
  key: string;
  messages: number;
  raw_bytes: number;
  stored_bytes: number;
  archived_at: string;
}

const packr = new Packr({ useRecords: false });
const DAY_MS = 86_400_000;

export class ConversationArchive {
  readonly archivedType: ChangeType<ArchivePayload>;
  readonly segmentKept: ChangeType<{ key: string; delete_after: string }>;
  readonly segmentDropped: ChangeType<{ key: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly objects: ObjectStore,
    private readonly conversations: ConversationStore,
    private readonly policy: (tier: string) => TierPolicy | undefined,
    private readonly options: ArchiveOptions,
    private readonly events: ArchiveEvents = {},
  ) {
    this.archivedType = changes.define<ArchivePayload>('conversations', 'archive', (db, p) => {
      db.prepare(
        `INSERT INTO conversation_segments (key, conversation_id, user_id, messages, raw_bytes, stored_bytes, created_at, delete_after)
         VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
         ON CONFLICT (key) DO UPDATE SET delete_after = NULL`,
      ).run(p.key, p.conversation_id, p.user_id, p.messages, p.raw_bytes, p.stored_bytes, p.archived_at);
      db.prepare('UPDATE conversations SET archive_key = ?, archived_at = ? WHERE id = ?').run(p.key, p.archived_at, p.conversation_id);
      db.prepare('DELETE FROM messages WHERE conversation_id = ?').run(p.conversation_id);
    });
    this.segmentKept = changes.define('conversations', 'segment_keep', (db, p) => {
      db.prepare('UPDATE conversation_segments SET delete_after = ? WHERE key = ?').run(p.delete_after, p.key);
    });
    this.segmentDropped = changes.define('conversations', 'segment_drop', (db, p) => {
      db.prepare('DELETE FROM conversation_segments WHERE key = ?').run(p.key);
    });
    conversations.archive = this;
  }

  /** The messages held in an archive object, in seq order. */
  async read(key: string): Promise<Message[]> {
    const stream = await getReferenced(this.objects, key, { what: 'an archived conversation', tier: 'archive', lost: (k) => this.events.missing?.(k) });
    const parts: Buffer[] = [];
    for await (const chunk of stream) parts.push(chunk as Buffer);
    return packr.unpack(await gunzip(Buffer.concat(parts))) as Message[];
  }

  /**
   * Checks that every archive object the user's conversations point at is there, reporting and
   * refusing with ObjectMissing otherwise: an export must fail before its first byte, not
   * stream a zip that breaks half-way.
   */
  async checkUser(userId: string): Promise<void> {
    const keys = this.db.prepare<{ archive_key: string }>('SELECT archive_key FROM conversations WHERE user_id = ? AND archive_key IS NOT NULL').all(userId);
    for (const { archive_key: key } of keys) {
      if (!(await this.objects.head(key))) {
        this.events.missing?.(key);
        throw new ObjectMissing('an archived conversation', 'archive');
      }
    }
  }

  /** Every archive object under the user's prefix (keys are conversations/<user>/<id>/…). */
  async objectsOfUser(userId: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const o of this.objects.list(`conversations/${userId}/`)) keys.push(o.key);
    return keys;
  }

  async deleteObject(key: string): Promise<void> {
    await this.objects.delete(key);
  }

  /** Where an archived conversation lives; undefined when it is hot. */
  location(conversationId: string) {
    const row = this.db
      .prepare<{ key: string; messages: number; raw_bytes: number; stored_bytes: number; created_at: string }>(
        `SELECT s.key, s.messages, s.raw_bytes, s.stored_bytes, s.created_at FROM conversations c
         JOIN conversation_segments s ON s.key = c.archive_key WHERE c.id = ?`,
      )
      .get(conversationId);
    return row && { tier: 'archive', store: this.objects.name, ...row };
  }

  async run(actor: Actor, now = Date.now()): Promise<ArchiveRunResult> {
    const result: ArchiveRunResult = { archived: 0, raw_bytes: 0, stored_bytes: 0, compression_ratio: null, deleted: 0, segments_expired: 0 };
    let seen = 0;
    for (const row of this.candidates('hot', now)) {
      // An empty conversation has nothing to move; retention deletes it in time.
      if (row.message_count > 0) await this.archiveOne(actor, row, now, result);
      if (++seen % this.options.batch === 0) this.events.progress?.('archive', seen);
    }
    this.events.progress?.('archive', seen);
    for (const row of this.candidates('retention', now)) {
      // Compliance: keep a copy in the archive before the conversation goes away.
      if (this.options.complianceRetentionDays > 0 && !row.archive_key && row.message_count > 0) await this.archiveOne(actor, row, now, result);
      await this.deleteExpired(actor, row.id, now);
      result.deleted++;
      if (result.deleted % this.options.batch === 0) this.events.progress?.('retention', result.deleted);
    }
    this.events.progress?.('retention', result.deleted);
    result.segments_expired = await this.dropExpiredSegments(actor, now);
    if (result.stored_bytes > 0) result.compression_ratio = Math.round((result.raw_bytes / result.stored_bytes) * 100) / 100;
    if (result.deleted) this.events.deleted?.(result.deleted);
    return result;
  }

  /** How many conversations the next run deletes for retention (for `strata retention --dry-run`). */
  countExpired(now = Date.now()): number {
    let n = 0;
    for (const _ of this.candidates('retention', now)) n++;
    return n;
  }

  /** Conversations past their tier's hot window (not yet archived) or past its retention. */
  private *candidates(kind: 'hot' | 'retention', now: number): Iterable<ConversationRow> {
    // Paged by (updated_at, id) so a long run never holds a statement open across awaits.
    let cursor = { updated_at: '', id: '' };
    for (;;) {
      const rows = this.db
        .prepare<ConversationRow & { tier: string | null }>(
          `SELECT c.*, u.tier FROM conversations c LEFT JOIN users u ON u.id = c.user_id
           WHERE (c.updated_at, c.id) > (?, ?) ${kind === 'hot' ? 'AND c.archive_key IS NULL' : ''}
           ORDER BY c.updated_at, c.id LIMIT ?`,
        )
        .all(cursor.updated_at, cursor.id, this.options.batch);
      if (rows.length === 0) return;
      const shortest = kind === 'hot' ? this.options.shortest.hotDays : this.options.shortest.retentionDays;
      for (const r of rows) {
        // Rows come in order of activity: once one is inside every tier's window, all the
        // rest are too, and the scan ends.
        if (now - Date.parse(r.updated_at) <= shortest * DAY_MS) return;
        const policy = r.tier ? this.policy(r.tier) : undefined;
        if (!policy) continue;
        const idle = now - Date.parse(r.updated_at);
        const days = kind === 'hot' ? policy.hotDays : policy.retentionDays;
        if (idle > days * DAY_MS) yield r;
      }
      const last = rows[rows.length - 1]!;
      cursor = { updated_at: last.updated_at, id: last.id };
    }
  }

  private async archiveOne(actor: Actor, row: ConversationRow, now: number, result: ArchiveRunResult): Promise<void> {
    const messages = this.db
      .prepare<Message>('SELECT seq, role, content, tokens, created_at, item FROM messages WHERE conversation_id = ? ORDER BY seq')
      .all(row.id)
      // A plain message has no item: the archive holds it as before the item column existed.
      .map((m) => (m.item === null ? { seq: m.seq, role: m.role, content: m.content, tokens: m.tokens, created_at: m.created_at } : m));
    const raw = packr.pack(messages);
    const packed = await gzip(raw);
    // Deterministic: the same conversation in the same state (length and last change) always
    // lands on the same key, so a run repeated after a crash overwrites instead of leaving a
    // second copy. The last change is in it because an item deletion keeps the length: the
    // segments it drops must never share a key with the next archive of the conversation.
    const key = archiveKey(row);
    await this.objects.put(key, (async function* () {
      yield packed;
    })());
    const done = await this.writer.write(actor, (tx) => {
      const current = this.conversations.row(row.id);
      // An item deleted (or metadata set) meanwhile leaves the count but moves updated_at: the
      // object read before it holds the old content and must not replace the rows (review).
      if (!current || current.archive_key || current.message_count !== row.message_count || current.updated_at !== row.updated_at) return false;
      tx.apply(this.archivedType, {
        conversation_id: row.id,
        user_id: row.user_id,
        key,
        messages: messages.length,
        raw_bytes: raw.length,
        stored_bytes: packed.length,
        archived_at: new Date(now).toISOString(),
      });
      tx.audit('conversations.archive', `conversation:${row.id}`, { key, messages: messages.length, stored_bytes: packed.length });
      return true;
    });
    if (!done) {
      // A message arrived (or the conversation went) while the object was written.
      if (!this.referenced(key)) await this.objects.delete(key);
      return;
    }
    await this.conversations.forget(row.id);
    result.archived++;
    result.raw_bytes += raw.length;
    result.stored_bytes += packed.length;
    this.events.archived?.(1, raw.length, packed.length);
  }

  private async deleteExpired(actor: Actor, conversationId: string, now: number): Promise<void> {
    const keep = this.options.complianceRetentionDays;
    const drop = await this.writer.write(actor, (tx) => {
      if (!this.conversations.row(conversationId)) return [];
      const keys = this.conversations.segmentKeys(conversationId);
      tx.apply(this.conversations.deleted, { id: conversationId });
      const deleteAfter = new Date(now + keep * DAY_MS).toISOString();
      for (const key of keys) {
        if (keep > 0) tx.apply(this.segmentKept, { key, delete_after: deleteAfter });
        else tx.apply(this.segmentDropped, { key });
      }
      tx.audit('conversations.retention_delete', `conversation:${conversationId}`, { kept_segments: keep > 0 ? keys.length : 0 });
      return keep > 0 ? [] : keys;
    });
    await this.conversations.forget(conversationId);
    for (const key of drop) await this.objects.delete(key);
  }

  private async dropExpiredSegments(actor: Actor, now: number): Promise<number> {
    const iso = new Date(now).toISOString();
    let dropped = 0;
    for (;;) {
      const keys = this.db
        .prepare<{ key: string }>('SELECT key FROM conversation_segments WHERE delete_after IS NOT NULL AND delete_after < ? LIMIT ?')
        .all(iso, this.options.batch)
        .map((r) => r.key);
      if (keys.length === 0) return dropped;
      await this.writer.write(actor, (tx) => {
        for (const key of keys) tx.apply(this.segmentDropped, { key });
        tx.audit('conversations.segments_expire', 'conversation_segments', { count: keys.length });
      });
      for (const key of keys) await this.objects.delete(key);
      dropped += keys.length;
    }
  }

  private referenced(key: string): boolean {
    return this.db.prepare('SELECT 1 AS one FROM conversation_segments WHERE key = ?').get(key) !== undefined;
  }
}

/** Where a conversation in this state is archived (see archiveOne). */
export function archiveKey(row: { user_id: string; id: string; message_count: number; updated_at: string }): string {
  return `conversations/${row.user_id}/${row.id}/${row.message_count}-${Date.parse(row.updated_at)}.msgpack.gz`;
}
