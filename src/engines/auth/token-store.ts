import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { InvalidInput, NotFound } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';

// Bearer tokens. The secret is 32 random bytes shown once, at creation; only its SHA-256 is
// stored (and logged to the change log), so neither the database, its backups nor a replica
// can give a token away. SHA-256 without a salt is enough here because the secret has 256
// bits of entropy: there is nothing to brute-force.

export const ROLES = ['admin', 'service', 'reader', 'user'] as const;
export type Role = (typeof ROLES)[number];

export const tokenMigrations: Migration[] = [
  {
    engine: 'tokens',
    version: 1,
    name: 'tokens',
    sql: `
      CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'service', 'reader', 'user')),
        user_id TEXT,
        hash BLOB NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        CHECK ((role = 'user') = (user_id IS NOT NULL))
      ) STRICT;
    `,
  },
];

export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  user_id: string | null;
  created_at: string;
}

export interface CreatedToken extends TokenInfo {
  /** The secret, returned only here. */
  token: string;
}

type TokenRow = TokenInfo & { hash: Uint8Array };

const TOKEN_PREFIX = 'strata_';

function hashSecret(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export class TokenStore {
  private readonly created: ChangeType<TokenRow>;
  private readonly deleted: ChangeType<{ id: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
  ) {
    this.created = changes.define<TokenRow>('tokens', 'create', (db, t) => {
      db.prepare('INSERT INTO tokens (id, name, role, user_id, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
        t.id,
        t.name,
        t.role,
        t.user_id,
        t.hash,
        t.created_at,
      );
    });
    this.deleted = changes.define<{ id: string }>('tokens', 'delete', (db, { id }) => {
      db.prepare('DELETE FROM tokens WHERE id = ?').run(id);
      // Runs on replicas too (replay), so a revocation reaches every node's cache.
      this.known.clear();
    });
  }

  /**
   * Tokens that authenticated recently, by the presented string: a request then costs neither
   * a SHA-256 nor a SQLite read. Only hits are kept (a token created later must work at once);
   * every revocation, and every replacement of the table (a bootstrap), empties it.
   */
  private readonly known = new LRUCache<string, TokenInfo>({ max: 10_000 });

  /** Forgets cached tokens after the table was replaced underneath (a replica's bootstrap). */
  forgetAll(): void {
    this.known.clear();
  }

  /**
   * `userExists` is asked inside the transaction, so a token can never be bound to a user an
   * erasure removed in the meantime (erased ids are never reused, so it would name nobody).
   */
  async create(actor: Actor, input: { name: string; role: Role; user_id?: string | null | undefined }, userExists?: (userId: string) => void): Promise<CreatedToken> {
    const userId = input.user_id ?? null;
    if (input.role === 'user' && !userId) throw new InvalidInput('a token with role "user" needs a user_id');
    if (input.role !== 'user' && userId) throw new InvalidInput(`a token with role "${input.role}" cannot be bound to a user_id`);
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const info: TokenInfo = {
      id: 'tok_' + randomBytes(9).toString('base64url'),
      name: input.name,
      role: input.role,
      user_id: userId,
      created_at: new Date().toISOString(),
    };
    await this.writer.write(actor, (tx) => {
      if (userId) userExists?.(userId);
      tx.apply(this.created, { ...info, hash: hashSecret(token) });
      tx.audit('tokens.create', `token:${info.id}`, { role: info.role, user_id: info.user_id });
    });
    return { ...info, token };
  }

  /** Inside an erasure: revokes every token bound to the user. */
  eraseUser(tx: Tx, userId: string): number {
    const ids = this.db.prepare<{ id: string }>('SELECT id FROM tokens WHERE user_id = ?').all(userId);
    for (const { id } of ids) tx.apply(this.deleted, { id });
    return ids.length;
  }

  async delete(actor: Actor, id: string): Promise<void> {
    await this.writer.write(actor, (tx) => {
      if (!this.db.prepare('SELECT 1 FROM tokens WHERE id = ?').get(id)) throw new NotFound(`token ${id} does not exist`);
      tx.apply(this.deleted, { id });
      tx.audit('tokens.delete', `token:${id}`);
    });
  }

  /** The token's record, or undefined for an unknown, malformed or deleted token. */
  authenticate(token: string): TokenInfo | undefined {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 200) return undefined;
    const cached = this.known.get(token);
    if (cached) return cached;
    const presented = hashSecret(token);
    const row = this.db.prepare<TokenRow>('SELECT * FROM tokens WHERE hash = ?').get(presented);
    // The lookup is by hash, which already reveals nothing about the secret; the comparison
    // is constant-time anyway, so no code path branches on secret bytes.
    if (!row || !timingSafeEqual(Buffer.from(row.hash), presented)) return undefined;
    const { hash: _hash, ...info } = row;
    this.known.set(token, info);
    return info;
  }

  count(): number {
    return this.db.prepare<{ n: number }>('SELECT count(*) AS n FROM tokens').get()?.n ?? 0;
  }
}
