import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Unavailable } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import { DecryptionFailed, openValue, sealValue } from './aead.js';
import { MasterKeyError, type MasterKey } from './master-key.js';

// The key hierarchy: master key (outside the data dir) → KEK (one row here, wrapped by the
// master key) → data keys: one per object (in the object's header) and one per user (in
// user_keys). Rotating the master key re-wraps the KEK row only; no data and no data key is
// rewritten. The KEK row and the user keys replicate through the change log, so every node of
// a cluster needs the same master key. A user's key is destroyed on erasure; what was sealed
// with it — in this database's free pages, in archives, in backups — is then unreadable.
// Backups never hold user keys (backups.ts keeps them in a separate, deletable prefix).

export const cryptoMigrations: Migration[] = [
  {
    engine: 'crypto',
    version: 1,
    name: 'keyring and user keys',
    sql: `
      CREATE TABLE keyring (
        name TEXT PRIMARY KEY,
        wrapped BLOB NOT NULL,
        master_key_id TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE user_keys (
        user_id TEXT PRIMARY KEY,
        wrapped BLOB NOT NULL,
        created_at TEXT NOT NULL
      ) STRICT;
    `,
  },
];

const KEK_AAD = Buffer.from('strata kek');

/** Wraps and unwraps object keys with the KEK of a database opened outside a node (backup verify). */
export function kekWrapper(db: SqlDatabase, master: MasterKey): { wrap(k: Buffer, c: string): Buffer; unwrap(w: Buffer, c: string): Buffer } {
  const row = db.prepare<{ wrapped: Uint8Array }>("SELECT wrapped FROM keyring WHERE name = 'kek'").get();
  if (!row) throw new MasterKeyError('the database has no keyring: it was not written with encryption on');
  let kek: Buffer;
  try {
    kek = openValue(master.key, Buffer.from(row.wrapped), KEK_AAD);
  } catch {
    throw new MasterKeyError(`the configured master key (id ${master.id}) does not open this database's keyring`);
  }
  return { wrap: (k, c) => sealValue(kek, k, Buffer.from(c)), unwrap: (w, c) => openValue(kek, w, Buffer.from(c)) };
}
const SYSTEM: Actor = { tokenId: 'system' };

export class Keyring {
  private kekBytes: Buffer | undefined;
  /** Derived from the KEK once; emails are looked up by it on every user write and lookup. */
  private blindKey: Buffer | undefined;
  private readonly kekSet: ChangeType<{ wrapped: Uint8Array; master_key_id: string; updated_at: string }>;
  readonly userKeyCreated: ChangeType<{ user_id: string; wrapped?: Uint8Array; created_at: string }>;
  readonly userKeyDestroyed: ChangeType<{ user_id: string }>;
  private readonly userKeys = new LRUCache<string, Buffer>({ max: 100_000 });

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly master: MasterKey | undefined,
  ) {
    // Deleted rows are zeroed on disk rather than left in free pages (a destroyed key must be gone).
    if (master) db.exec('PRAGMA secure_delete = ON');
    this.kekSet = changes.define('crypto', 'set_kek', (d, p) => {
      d.prepare(
        `INSERT INTO keyring (name, wrapped, master_key_id, updated_at) VALUES ('kek', ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET wrapped = excluded.wrapped, master_key_id = excluded.master_key_id, updated_at = excluded.updated_at`,
      ).run(Buffer.from(p.wrapped), p.master_key_id, p.updated_at);
      this.kekBytes = undefined;
      this.blindKey = undefined;
    });
    // A record without `wrapped` comes from a backup segment, which never carries user keys;
    // the restore installs the keys that still exist from the backup's key prefix instead.
    this.userKeyCreated = changes.define('crypto', 'create_user_key', (d, p) => {
      if (p.wrapped) d.prepare('INSERT OR REPLACE INTO user_keys (user_id, wrapped, created_at) VALUES (?, ?, ?)').run(p.user_id, Buffer.from(p.wrapped), p.created_at);
    });
    // The key also leaves the change log: its creation record keeps only the user id.
    this.userKeyDestroyed = changes.define('crypto', 'destroy_user_key', (d, p) => {
      d.prepare('DELETE FROM user_keys WHERE user_id = ?').run(p.user_id);
      changes.rewrite('crypto', 'create_user_key', (old) => {
        const o = old as { user_id: string; wrapped?: Uint8Array; created_at: string };
        return o.user_id === p.user_id && o.wrapped ? { user_id: o.user_id, created_at: o.created_at } : undefined;
      });
      this.userKeys.delete(p.user_id);
    });
  }

  get enabled(): boolean {
    return this.master !== undefined;
  }

  /**
   * Checks the configured key against the data dir and, on a new primary, makes the KEK.
   * A wrong or missing key stops the daemon here, before anything is served.
   */
  async open(writer: Writer | undefined): Promise<void> {
    const row = this.row();
    if (!this.master) {
      if (row) throw new MasterKeyError(`this data dir is encrypted (master key id ${row.master_key_id}); set encryption.enabled: true and its master key`);
      return;
    }
    if (row) {
      this.kek();
      return;
    }
    if (!writer) return; // a replica gets the KEK with its first bootstrap
    const kek = randomBytes(32);
    const wrapped = sealValue(this.master.key, kek, KEK_AAD);
    await writer.write(SYSTEM, (tx) => tx.apply(this.kekSet, { wrapped, master_key_id: this.master!.id, updated_at: new Date().toISOString() }));
  }

  /** Re-wraps the KEK under a new master key (`strata keys rotate`); returns the new key's id. */
  async rotate(writer: Writer, next: MasterKey): Promise<{ from: string; to: string }> {
    const kek = this.kek();
    const from = this.row()!.master_key_id;
    const wrapped = sealValue(next.key, kek, KEK_AAD);
    await writer.write(SYSTEM, (tx) => tx.apply(this.kekSet, { wrapped, master_key_id: next.id, updated_at: new Date().toISOString() }));
    return { from, to: next.id };
  }

  kek(): Buffer {
    if (this.kekBytes) return this.kekBytes;
    if (!this.master) throw new Unavailable('encryption is not enabled');
    const row = this.row();
    if (!row) throw new Unavailable('the encryption keyring has not arrived from the primary yet');
    try {
      this.kekBytes = openValue(this.master.key, row.wrapped, KEK_AAD);
    } catch (err) {
      if (!(err instanceof DecryptionFailed)) throw err;
      throw new MasterKeyError(
        `the configured master key (id ${this.master.id}) does not open this data dir, which is encrypted with master key id ${row.master_key_id}`,
      );
    }
    return this.kekBytes;
  }

  wrap(dataKey: Buffer, context: string): Buffer {
    return sealValue(this.kek(), dataKey, Buffer.from(context));
  }

  unwrap(wrapped: Buffer, context: string): Buffer {
    return openValue(this.kek(), wrapped, Buffer.from(context));
  }

  /** A keyed hash for equality lookups on encrypted values (email uniqueness). */
  blindIndex(value: string): string {
    this.blindKey ??= Buffer.from(hkdfSync('sha256', this.kek(), Buffer.alloc(0), 'strata blind index', 32));
    return createHmac('sha256', this.blindKey).update(value).digest('hex');
  }

  /** The user's key, made (and logged in this transaction) on first use. */
  userKeyForWrite(tx: Tx, userId: string): Buffer {
    const existing = this.userKey(userId);
    if (existing) return existing;
    const key = randomBytes(32);
    tx.apply(this.userKeyCreated, { user_id: userId, wrapped: this.wrap(key, `user:${userId}`), created_at: new Date().toISOString() });
    this.userKeys.set(userId, key);
    return key;
  }

  /** The user's key, or undefined when the user has none (never wrote, or was erased). */
  userKey(userId: string): Buffer | undefined {
    const cached = this.userKeys.get(userId);
    if (cached) return cached;
    const row = this.db.prepare<{ wrapped: Buffer }>('SELECT wrapped FROM user_keys WHERE user_id = ?').get(userId);
    if (!row) return undefined;
    const key = this.unwrap(Buffer.from(row.wrapped), `user:${userId}`);
    this.userKeys.set(userId, key);
    return key;
  }

  /** Crypto-shredding: from this commit on, nothing sealed with the user's key can be read. */
  destroyUserKey(tx: Tx, userId: string): void {
    tx.apply(this.userKeyDestroyed, { user_id: userId });
  }

  /** Forgets cached keys after the tables were replaced underneath (a bootstrap or restore). */
  reload(): void {
    this.kekBytes = undefined;
    this.blindKey = undefined;
    this.userKeys.clear();
  }

  private row(): { wrapped: Buffer; master_key_id: string } | undefined {
    const r = this.db.prepare<{ wrapped: Uint8Array; master_key_id: string }>("SELECT wrapped, master_key_id FROM keyring WHERE name = 'kek'").get();
    return r && { wrapped: Buffer.from(r.wrapped), master_key_id: r.master_key_id };
  }
}
