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
  {
    // S3 credentials (issue 17): an access key id and a secret beside the bearer token. SigV4
    // needs the secret itself (HMAC), so unlike the token it cannot be stored as a hash: it is
    // sealed with the keyring's KEK when encryption is on (first byte 1), plain otherwise (0).
    engine: 'tokens',
    version: 2,
    name: 's3 credentials',
    sql: `
      ALTER TABLE tokens ADD COLUMN s3_access_key TEXT;
      ALTER TABLE tokens ADD COLUMN s3_secret BLOB;
      CREATE UNIQUE INDEX tokens_s3_access_key ON tokens (s3_access_key) WHERE s3_access_key IS NOT NULL;
    `,
  },
];

/** Seals S3 secrets at rest: the keyring's KEK wrap (Keyring.wrap/unwrap), when encryption is on. */
export interface SecretSealer {
  readonly enabled: boolean;
  wrap(plain: Buffer, context: string): Buffer;
  unwrap(sealed: Buffer, context: string): Buffer;
}

export interface S3Credential {
  access_key_id: string;
  secret_access_key: string;
}

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
  /** With `s3: true`: the S3 access key id and secret (the secret shown only here too). */
  s3?: S3Credential;
}

type TokenRow = TokenInfo & { hash: Uint8Array; s3_access_key?: string | null; s3_secret?: Uint8Array | null };

const TOKEN_PREFIX = 'strata_';

/** RFC 4648 base32 letters and digits, upper case (access key ids look like AWS's). */
function base32(bytes: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

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
    private readonly sealer?: SecretSealer,
  ) {
    this.created = changes.define<TokenRow>('tokens', 'create', (db, t) => {
      db.prepare('INSERT INTO tokens (id, name, role, user_id, hash, created_at, s3_access_key, s3_secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
        t.id,
        t.name,
        t.role,
        t.user_id,
        t.hash,
        t.created_at,
        t.s3_access_key ?? null,
        t.s3_secret ? Buffer.from(t.s3_secret) : null,
      );
    });
    this.deleted = changes.define<{ id: string }>('tokens', 'delete', (db, { id }) => {
      db.prepare('DELETE FROM tokens WHERE id = ?').run(id);
      // Runs on replicas too (replay), so a revocation reaches every node's cache.
      this.known.clear();
      this.s3Known.clear();
    });
  }

  /** S3 secrets opened recently, by access key id (emptied with the token cache). */
  private readonly s3Known = new LRUCache<string, { secret: string; info: TokenInfo }>({ max: 10_000 });

  /**
   * Tokens that authenticated recently, by the presented string: a request then costs neither
   * a SHA-256 nor a SQLite read. Only hits are kept (a token created later must work at once);
   * every revocation, and every replacement of the table (a bootstrap), empties it.
   */
  private readonly known = new LRUCache<string, TokenInfo>({ max: 10_000 });

  /** Forgets cached tokens after the table was replaced underneath (a replica's bootstrap). */
  forgetAll(): void {
    this.known.clear();
    this.s3Known.clear();
  }

  /**
   * `userExists` is asked inside the transaction, so a token can never be bound to a user an
   * erasure removed in the meantime (erased ids are never reused, so it would name nobody).
   */
  async create(actor: Actor, input: { name: string; role: Role; user_id?: string | null | undefined; s3?: boolean | undefined }, userExists?: (userId: string) => void): Promise<CreatedToken> {
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
    // AWS's shapes: a 20-character upper-case key id, a 40-character secret.
    const s3: S3Credential | undefined = input.s3
      ? { access_key_id: 'STRATA' + base32(randomBytes(9)).slice(0, 14), secret_access_key: randomBytes(30).toString('base64').replace(/\+/g, 'A').replace(/\//g, 'z') }
      : undefined;
    await this.writer.write(actor, (tx) => {
      if (userId) userExists?.(userId);
      tx.apply(this.created, { ...info, hash: hashSecret(token), ...(s3 ? { s3_access_key: s3.access_key_id, s3_secret: this.sealSecret(s3) } : {}) });
      tx.audit('tokens.create', `token:${info.id}`, { role: info.role, user_id: info.user_id, ...(s3 ? { s3_access_key: s3.access_key_id } : {}) });
    });
    return { ...info, token, ...(s3 ? { s3 } : {}) };
  }

  private sealSecret(c: S3Credential): Buffer {
    const plain = Buffer.from(c.secret_access_key, 'utf8');
    return this.sealer?.enabled ? Buffer.concat([Buffer.from([1]), this.sealer.wrap(plain, `s3-secret:${c.access_key_id}`)]) : Buffer.concat([Buffer.from([0]), plain]);
  }

  /** The secret and token of an S3 access key id, or undefined (unknown, revoked, or unopenable). */
  s3Credential(accessKeyId: string): { secret: string; info: TokenInfo } | undefined {
    if (accessKeyId.length > 128) return undefined;
    const cached = this.s3Known.get(accessKeyId);
    if (cached) return cached;
    const row = this.db.prepare<TokenRow>('SELECT * FROM tokens WHERE s3_access_key = ?').get(accessKeyId);
    if (!row?.s3_secret) return undefined;
    const stored = Buffer.from(row.s3_secret);
    let secret: string;
    try {
      secret = stored[0] === 1 ? this.sealer!.unwrap(stored.subarray(1), `s3-secret:${accessKeyId}`).toString('utf8') : stored.subarray(1).toString('utf8');
    } catch {
      return undefined; // sealed, and this node has no key that opens it
    }
    const { hash: _h, s3_access_key: _k, s3_secret: _s, ...info } = row;
    const found = { secret, info };
    this.s3Known.set(accessKeyId, found);
    return found;
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
    const { hash: _hash, s3_access_key: _k, s3_secret: _s, ...info } = row;
    this.known.set(token, info);
    return info;
  }

  count(): number {
    return this.db.prepare<{ n: number }>('SELECT count(*) AS n FROM tokens').get()?.n ?? 0;
  }
}
