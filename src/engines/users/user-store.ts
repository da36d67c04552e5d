import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Conflict, InvalidInput, NotFound, PayloadTooLarge } from '../errors.js';
import type { CacheTier } from '../cache/cache-tier.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import { FieldCipher } from '../crypto/field-cipher.js';

// Users and their preferences. Emails are unique regardless of case (the lower-cased form
// carries the unique index), and a user's tier must be one of the configured tiers. With
// encryption on, the email and the preferences are sealed with the user's key and the unique
// index holds a blind index (a keyed hash) of the lower-cased email instead.

export const userMigrations: Migration[] = [
  {
    engine: 'users',
    version: 1,
    name: 'users and preferences',
    sql: `
      CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        email_key TEXT NOT NULL UNIQUE,
        tier TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE preferences (
        user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        doc TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
    `,
  },
  {
    engine: 'users',
    version: 2,
    name: 'erased user ids are never reused',
    // Everything keyed by a user id (the billing ledger above all, which outlives an account)
    // would pass to whoever got the id next. Erasures before this migration are known from
    // their audit entries.
    sql: `
      CREATE TABLE erased_users (id TEXT PRIMARY KEY, erased_at TEXT NOT NULL) STRICT;
      INSERT OR IGNORE INTO erased_users (id, erased_at)
        SELECT substr(target, 6), time FROM audit_log WHERE action = 'users.erase_done' AND target LIKE 'user:%';
    `,
  },
];

export const PREFERENCES_MAX_BYTES = 64 * 1024;

export interface User {
  id: string;
  email: string;
  tier: string;
  created_at: string;
  updated_at: string;
}

type UserRow = User & { email_key: string };

export class UserStore {
  private readonly upserted: ChangeType<UserRow>;
  private readonly preferencesSet: ChangeType<{ user_id: string; doc: string; updated_at: string }>;
  private readonly erased: ChangeType<{ id: string; erased_at?: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly tiers: () => readonly string[],
    /** Preferences are read through this cache (read on every chat turn, written rarely). */
    private readonly cache?: CacheTier,
    private readonly cipher = new FieldCipher(undefined),
  ) {
    this.upserted = changes.define<UserRow>('users', 'upsert', (db, u) => {
      db.prepare(
        `INSERT INTO users (id, email, email_key, tier, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET email = excluded.email, email_key = excluded.email_key,
           tier = excluded.tier, updated_at = excluded.updated_at`,
      ).run(u.id, u.email, u.email_key, u.tier, u.created_at, u.updated_at);
      this.tierById.delete(u.id);
    });
    this.preferencesSet = changes.define('users', 'set_preferences', (db, p) => {
      db.prepare(
        `INSERT INTO preferences (user_id, doc, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (user_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at`,
      ).run(p.user_id, p.doc, p.updated_at);
    });
    this.erased = changes.define<{ id: string; erased_at?: string }>('users', 'erase', (db, p) => {
      db.prepare('DELETE FROM users WHERE id = ?').run(p.id);
      this.tierById.delete(p.id);
      // The tombstone: the id can never name another person (see the migration).
      db.prepare('INSERT OR IGNORE INTO erased_users (id, erased_at) VALUES (?, ?)').run(p.id, p.erased_at ?? new Date(0).toISOString());
    });
  }

  /** Inside an erasure: the user row and (by cascade) their preferences. */
  erase(tx: Tx, id: string): void {
    tx.apply(this.erased, { id, erased_at: new Date().toISOString() });
  }

  /**
   * Makes sure the user has a data key, so that another store (the billing ledger) can seal
   * with it. Users created before encryption was turned on get theirs here.
   */
  async ensureKey(actor: Actor, id: string): Promise<void> {
    if (!this.cipher.needsKey(id)) return;
    await this.writer.write(actor, (tx) => {
      this.get(id);
      this.cipher.ensureKey(tx, id);
    });
  }

  /** Whether the id belonged to a user who was erased (it is never given out again). */
  wasErased(id: string): boolean {
    return this.db.prepare('SELECT 1 FROM erased_users WHERE id = ?').get(id) !== undefined;
  }

  create(actor: Actor, input: { id?: string | undefined; email: string; tier: string }): Promise<User> {
    this.checkTier(input.tier);
    return this.writer.write(actor, (tx) => {
      const id = input.id ?? randomUUID();
      if (this.find(id)) throw new Conflict(`a user with id ${id} already exists`);
      if (this.wasErased(id)) throw new Conflict(`the id ${id} belonged to an erased user and is never reused; choose another`);
      this.checkEmailFree(input.email, null);
      const now = new Date().toISOString();
      const email = input.email.trim();
      const row: UserRow = { id, email: this.cipher.seal(tx, id, email), email_key: this.cipher.emailKey(email), tier: input.tier, created_at: now, updated_at: now };
      tx.apply(this.upserted, row);
      tx.audit('users.create', `user:${id}`);
      return { ...publicUser(row), email };
    });
  }

  update(actor: Actor, id: string, patch: { email?: string | undefined; tier?: string | undefined }): Promise<User> {
    if (patch.tier !== undefined) this.checkTier(patch.tier);
    return this.writer.write(actor, (tx) => {
      const current = this.get(id);
      if (patch.email !== undefined) this.checkEmailFree(patch.email, id);
      const email = patch.email?.trim() ?? current.email;
      const row: UserRow = {
        ...current,
        email: this.cipher.seal(tx, id, email),
        email_key: this.cipher.emailKey(email),
        tier: patch.tier ?? current.tier,
        updated_at: new Date().toISOString(),
      };
      tx.apply(this.upserted, row);
      tx.audit('users.update', `user:${id}`, { fields: Object.keys(patch) });
      return { ...publicUser(row), email };
    });
  }

  find(id: string): User | undefined {
    const row = this.db.prepare<UserRow>('SELECT * FROM users WHERE id = ?').get(id);
    return row && { ...publicUser(row), email: this.cipher.open(row.id, row.email) ?? '' };
  }

  /**
   * The user's tier, for the quota check on every usage record: cached, since find() reads the
   * row and opens the sealed email, neither of which a quota needs. The appliers below clear it,
   * on replicas too; forgetAll() when the table is replaced (a bootstrap).
   */
  tierOf(id: string): string {
    let tier = this.tierById.get(id);
    if (tier === undefined) {
      tier = this.db.prepare<{ tier: string }>('SELECT tier FROM users WHERE id = ?').get(id)?.tier;
      if (tier === undefined) throw new NotFound(`user ${id} does not exist`);
      this.tierById.set(id, tier);
    }
    return tier;
  }

  forgetAll(): void {
    this.tierById.clear();
  }

  private readonly tierById = new LRUCache<string, string>({ max: 100_000 });

  get(id: string): User {
    const user = this.find(id);
    if (!user) throw new NotFound(`user ${id} does not exist`);
    return user;
  }

  /** The stored JSON text ('{}' when never set); cached, and the cache is kept current on write. */
  /** The stored JSON as UTF-8 bytes, as the cache holds them (an answer sends them as they are). */
  async preferencesJson(userId: string): Promise<Buffer> {
    const cached = await this.cache?.get('preferences', `prefs:${userId}`);
    if (cached) return cached;
    this.get(userId);
    const stored = this.db.prepare<{ doc: string }>('SELECT doc FROM preferences WHERE user_id = ?').get(userId)?.doc;
    const doc = Buffer.from((stored !== undefined && this.cipher.open(userId, stored)) || '{}');
    // Issued right after the read, before any await: see ConversationStore on ordering.
    void this.cache?.set(`prefs:${userId}`, doc);
    return doc;
  }

  async preferences(userId: string): Promise<Record<string, unknown>> {
    return JSON.parse((await this.preferencesJson(userId)).toString('utf8')) as Record<string, unknown>;
  }

  /** Drops cached state of an erased user. */
  forget(userId: string): Promise<void> | undefined {
    return this.cache?.delete([`prefs:${userId}`]);
  }

  async setPreferences(actor: Actor, userId: string, doc: Record<string, unknown>): Promise<Record<string, unknown>> {
    const text = JSON.stringify(doc);
    if (Buffer.byteLength(text) > PREFERENCES_MAX_BYTES) throw new PayloadTooLarge(PREFERENCES_MAX_BYTES);
    const saved = await this.writer.write(actor, (tx) => {
      this.get(userId);
      tx.apply(this.preferencesSet, { user_id: userId, doc: this.cipher.seal(tx, userId, text), updated_at: new Date().toISOString() });
      tx.audit('users.set_preferences', `user:${userId}`);
      return doc;
    });
    void this.cache?.set(`prefs:${userId}`, Buffer.from(text));
    return saved;
  }

  private checkTier(tier: string): void {
    const tiers = this.tiers();
    if (!tiers.includes(tier)) throw new InvalidInput(`unknown tier "${tier}"; configured tiers: ${tiers.join(', ')}`);
  }

  private checkEmailFree(email: string, exceptId: string | null): void {
    const owner = this.db.prepare<{ id: string }>('SELECT id FROM users WHERE email_key = ?').get(this.cipher.emailKey(email));
    if (owner && owner.id !== exceptId) throw new Conflict('a user with this email already exists');
  }
}

function publicUser(row: UserRow): User {
  return { id: row.id, email: row.email, tier: row.tier, created_at: row.created_at, updated_at: row.updated_at };
}
