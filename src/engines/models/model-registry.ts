import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Conflict, InvalidInput, NotFound, ObjectMissing, Unavailable } from '../errors.js';
import type { ObjectStore, PutResult } from '../objects/object-store.js';
import type { ModelCache } from './model-cache.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';

// Models, their versions and files, aliases with their history, and weighted rollouts.
//
// Blobs before references: a file's bytes are written to the object tier under a fresh key
// (`blobs/<uuid>`) and verified before the transaction that references them commits. If a
// blob with the same sha256 already exists, the new row points at the existing blob and the
// fresh copy is deleted after the commit — identical content is stored once, without the
// rename-after-hash that S3 cannot do. A crash between the put and the commit leaves an
// unreferenced object, which garbage collection removes; never a row without its bytes.

export const modelMigrations: Migration[] = [
  {
    engine: 'models',
    version: 1,
    name: 'model registry',
    sql: `
      CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        tier TEXT NOT NULL DEFAULT 'hot',
        key TEXT NOT NULL,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE models (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE model_versions (
        model TEXT NOT NULL REFERENCES models (name),
        version TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'final')),
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        finalized_at TEXT,
        PRIMARY KEY (model, version)
      ) STRICT;
      CREATE TABLE model_files (
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL REFERENCES blobs (sha256),
        created_at TEXT NOT NULL,
        PRIMARY KEY (model, version, path),
        FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
      ) STRICT;
      CREATE INDEX model_files_sha ON model_files (sha256);
      CREATE TABLE model_aliases (
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (model, alias)
      ) STRICT;
      CREATE TABLE model_alias_history (
        seq INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version TEXT NOT NULL,
        previous TEXT,
        token_id TEXT NOT NULL,
        time TEXT NOT NULL
      ) STRICT;
      CREATE TABLE model_rollouts (
        model TEXT PRIMARY KEY,
        variants TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
    `,
  },
];

modelMigrations.push({
  engine: 'models',
  version: 2,
  name: 'resumable upload sessions',
  sql: `
    CREATE TABLE model_uploads (
      id TEXT PRIMARY KEY,
      model TEXT NOT NULL,
      version TEXT NOT NULL,
      path TEXT NOT NULL,
      created_at TEXT NOT NULL
    ) STRICT;
  `,
});

modelMigrations.push({
  engine: 'models',
  version: 3,
  name: 'archived versions',
  sql: `ALTER TABLE model_versions ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;`,
});

modelMigrations.push({
  engine: 'models',
  version: 4,
  name: 'training checkpoints',
  sql: `
    CREATE TABLE checkpoints (
      run TEXT NOT NULL,
      step INTEGER NOT NULL,
      archived INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL,
      PRIMARY KEY (run, step)
    ) STRICT;
    CREATE TABLE checkpoint_files (
      run TEXT NOT NULL,
      step INTEGER NOT NULL,
      path TEXT NOT NULL,
      size INTEGER NOT NULL,
      sha256 TEXT NOT NULL REFERENCES blobs (sha256),
      created_at TEXT NOT NULL,
      PRIMARY KEY (run, step, path),
      FOREIGN KEY (run, step) REFERENCES checkpoints (run, step) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX checkpoint_files_sha ON checkpoint_files (sha256);
  `,
});

modelMigrations.push({
  engine: 'models',
  version: 5,
  name: 'S3 entity tags',
  // The ETag an S3 client saw when it wrote the file: the body's MD5, or md5-of-md5s-N for a
  // multipart upload (it depends on the part boundaries, so it is the file's, not the blob's).
  // NULL for files written through the native API, which computes no MD5.
  sql: `ALTER TABLE model_files ADD COLUMN etag TEXT;`,
});

modelMigrations.push({
  engine: 'models',
  version: 6,
  name: 'S3 entity tags of checkpoint files',
  sql: `ALTER TABLE checkpoint_files ADD COLUMN etag TEXT;`,
});

export interface FileEntry {
  path: string;
  size: number;
  sha256: string;
}

export interface RolloutVariant {
  version: string;
  weight: number;
}

/** Model and version names (the native API's id schema). */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

type VersionRow = { model: string; version: string; state: 'open' | 'final'; metadata: string; created_at: string; finalized_at: string | null; archived?: number };

/** File paths inside a version: relative, slash-separated, no `..`, no NUL, no backslash. */
function checkSha(sha: string | undefined): void {
  if (sha !== undefined && !/^[0-9a-fA-F]{64}$/.test(sha)) throw new InvalidInput('X-Content-Sha256 must be 64 hex characters');
}

export function checkFilePath(path: string): void {
  if (
    path.length === 0 ||
    path.length > 1024 ||
    path.startsWith('/') ||
    /[\0\\]/.test(path) ||
    path.split('/').some((s) => s === '' || s === '.' || s === '..')
  ) {
    throw new InvalidInput(`invalid file path ${JSON.stringify(path)}: use a relative path without "..", "//", NUL or backslashes`);
  }
}

export class ModelRegistry {
  private readonly modelPut: ChangeType<{ name: string; description: string; tags: string; now: string }>;
  private readonly versionPut: ChangeType<VersionRow>;
  private readonly filePut: ChangeType<FileEntry & { model: string; version: string; key: string; now: string; etag?: string | null }>;
  private readonly aliasSet: ChangeType<{ model: string; alias: string; version: string; previous: string | null; token_id: string; now: string }>;
  private readonly blobDeleted: ChangeType<{ sha256: string }>;
  private readonly blobMoved: ChangeType<{ sha256: string; tier: string; key: string }>;
  private readonly uploadStarted: ChangeType<{ id: string; model: string; version: string; path: string; created_at: string }>;
  private readonly uploadEnded: ChangeType<{ id: string }>;
  private readonly rolloutSet: ChangeType<{ model: string; variants: string; now: string }>;
  private readonly versionDeleted: ChangeType<{ model: string; version: string }>;
  private readonly fileDeleted: ChangeType<{ model: string; version: string; path: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly store: ObjectStore,
    private readonly cache?: ModelCache,
    private readonly pinnedAliases: readonly string[] = [],
    private readonly archive?: ObjectStore,
    private readonly events: { objectMissing?(tier: string, key: string): void } = {},
  ) {
    this.modelPut = changes.define('models', 'put', (db, m) => {
      db.prepare(
        `INSERT INTO models (name, description, tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, tags = excluded.tags, updated_at = excluded.updated_at`,
      ).run(m.name, m.description, m.tags, m.now, m.now);
    });
    this.versionPut = changes.define<VersionRow>('models', 'put_version', (db, v) => {
      db.prepare(
        `INSERT INTO model_versions (model, version, state, metadata, created_at, finalized_at, archived) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (model, version) DO UPDATE SET state = excluded.state, finalized_at = excluded.finalized_at, archived = excluded.archived`,
      ).run(v.model, v.version, v.state, v.metadata, v.created_at, v.finalized_at, v.archived ?? 0);
    });
    this.filePut = changes.define('models', 'put_file', (db, f) => {
      db.prepare('INSERT OR IGNORE INTO blobs (sha256, size, tier, key, created_at) VALUES (?, ?, ?, ?, ?)').run(f.sha256, f.size, 'hot', f.key, f.now);
      db.prepare(
        `INSERT INTO model_files (model, version, path, size, sha256, created_at, etag) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (model, version, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at, etag = excluded.etag`,
      ).run(f.model, f.version, f.path, f.size, f.sha256, f.now, f.etag ?? null);
    });
    this.aliasSet = changes.define('models', 'set_alias', (db, a) => {
      db.prepare(
        `INSERT INTO model_aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at`,
      ).run(a.model, a.alias, a.version, a.now);
      db.prepare('INSERT INTO model_alias_history (model, alias, version, previous, token_id, time) VALUES (?, ?, ?, ?, ?, ?)').run(
        a.model,
        a.alias,
        a.version,
        a.previous,
        a.token_id,
        a.now,
      );
    });
    this.blobDeleted = changes.define<{ sha256: string }>('models', 'delete_blob', (db, b) => {
      db.prepare(
        'DELETE FROM blobs WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM model_files WHERE sha256 = ?) AND NOT EXISTS (SELECT 1 FROM checkpoint_files WHERE sha256 = ?)',
      ).run(b.sha256, b.sha256, b.sha256);
    });
    this.blobMoved = changes.define<{ sha256: string; tier: string; key: string }>('models', 'move_blob', (db, b) => {
      db.prepare('UPDATE blobs SET tier = ?, key = ? WHERE sha256 = ?').run(b.tier, b.key, b.sha256);
    });
    this.uploadStarted = changes.define('models', 'start_upload', (db, u) => {
      db.prepare('INSERT INTO model_uploads (id, model, version, path, created_at) VALUES (?, ?, ?, ?, ?)').run(u.id, u.model, u.version, u.path, u.created_at);
    });
    this.uploadEnded = changes.define<{ id: string }>('models', 'end_upload', (db, u) => {
      db.prepare('DELETE FROM model_uploads WHERE id = ?').run(u.id);
    });
    // Retention: the version's rows go; its blobs, once nothing references them, go with the
    // next garbage collection (after its grace period), like any unreferenced blob.
    this.versionDeleted = changes.define<{ model: string; version: string }>('models', 'delete_version', (db, v) => {
      db.prepare('DELETE FROM model_uploads WHERE model = ? AND version = ?').run(v.model, v.version);
      db.prepare('DELETE FROM model_files WHERE model = ? AND version = ?').run(v.model, v.version);
      db.prepare('DELETE FROM model_versions WHERE model = ? AND version = ?').run(v.model, v.version);
    });
    // A file leaves an open version (S3 DeleteObject); its blob goes with the next garbage
    // collection once nothing references it.
    this.fileDeleted = changes.define<{ model: string; version: string; path: string }>('models', 'delete_file', (db, f) => {
      db.prepare('DELETE FROM model_files WHERE model = ? AND version = ? AND path = ?').run(f.model, f.version, f.path);
    });
    this.rolloutSet = changes.define('models', 'set_rollout', (db, r) => {
      db.prepare(
        `INSERT INTO model_rollouts (model, variants, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (model) DO UPDATE SET variants = excluded.variants, updated_at = excluded.updated_at`,
      ).run(r.model, r.variants, r.now);
    });
  }

  putModel(actor: Actor, name: string, input: { description?: string | undefined; tags?: string[] | undefined }): Promise<{ created: boolean }> {
    return this.writer.write(actor, (tx) => {
      const existing = this.db.prepare<{ description: string; tags: string }>('SELECT description, tags FROM models WHERE name = ?').get(name);
      tx.apply(this.modelPut, {
        name,
        description: input.description ?? existing?.description ?? '',
        tags: input.tags ? JSON.stringify(input.tags) : (existing?.tags ?? '[]'),
        now: new Date().toISOString(),
      });
      tx.audit(existing ? 'models.update' : 'models.create', `model:${name}`);
      return { created: !existing };
    });
  }

  listModels(limit: number, after?: string) {
    return this.db
      .prepare<{ name: string; description: string; tags: string; created_at: string; updated_at: string }>(
        'SELECT * FROM models WHERE name > ? ORDER BY name LIMIT ?',
      )
      .all(after ?? '', limit)
      .map((m) => ({ ...m, tags: JSON.parse(m.tags) as string[] }));
  }

  getModel(name: string) {
    const m = this.db.prepare<{ name: string; description: string; tags: string; created_at: string; updated_at: string }>('SELECT * FROM models WHERE name = ?').get(name);
    if (!m) throw new NotFound(`model ${name} does not exist`);
    const versions = this.db
      .prepare<VersionRow>('SELECT * FROM model_versions WHERE model = ? ORDER BY created_at, version')
      .all(name)
      .map((v) => ({ version: v.version, state: v.state, created_at: v.created_at, finalized_at: v.finalized_at }));
    const aliases = Object.fromEntries(
      this.db.prepare<{ alias: string; version: string }>('SELECT alias, version FROM model_aliases WHERE model = ? ORDER BY alias').all(name).map((a) => [a.alias, a.version]),
    );
    const alias_history = this.db
      .prepare('SELECT alias, version, previous, token_id, time FROM model_alias_history WHERE model = ? ORDER BY seq DESC LIMIT 100')
      .all(name);
    const rollout = this.db.prepare<{ variants: string }>('SELECT variants FROM model_rollouts WHERE model = ?').get(name);
    return { ...m, tags: JSON.parse(m.tags) as string[], versions, aliases, alias_history, rollout: rollout ? (JSON.parse(rollout.variants) as RolloutVariant[]) : null };
  }

  createVersion(actor: Actor, model: string, input: { version?: string | undefined; metadata?: Record<string, unknown> | undefined }) {
    return this.writer.write(actor, (tx) => {
      this.getModel(model);
      const version = input.version ?? new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15) + '-' + randomUUID().slice(0, 8);
      if (this.findVersion(model, version)) throw new Conflict(`version ${version} of ${model} already exists`);
      if (this.db.prepare('SELECT 1 FROM model_aliases WHERE model = ? AND alias = ?').get(model, version)) {
        throw new Conflict(`"${version}" is an alias of ${model}; versions and aliases share one namespace`);
      }
      const row: VersionRow = { model, version, state: 'open', metadata: JSON.stringify(input.metadata ?? {}), created_at: new Date().toISOString(), finalized_at: null };
      tx.apply(this.versionPut, row);
      tx.audit('models.create_version', `model:${model}@${version}`);
      return { version, state: 'open' as const, metadata: input.metadata ?? {}, created_at: row.created_at };
    });
  }

  private findVersion(model: string, version: string): VersionRow | undefined {
    return this.db.prepare<VersionRow>('SELECT * FROM model_versions WHERE model = ? AND version = ?').get(model, version);
  }

  /** A version id or an alias → the version row. */
  resolveVersion(model: string, versionOrAlias: string): VersionRow {
    const direct = this.findVersion(model, versionOrAlias);
    if (direct) return direct;
    const alias = this.db.prepare<{ version: string }>('SELECT version FROM model_aliases WHERE model = ? AND alias = ?').get(model, versionOrAlias);
    const viaAlias = alias && this.findVersion(model, alias.version);
    if (!viaAlias) throw new NotFound(`model ${model} has no version or alias "${versionOrAlias}"`);
    return viaAlias;
  }

  getVersion(model: string, versionOrAlias: string) {
    const v = this.resolveVersion(model, versionOrAlias);
    const files = this.db
      .prepare<FileEntry>('SELECT path, size, sha256 FROM model_files WHERE model = ? AND version = ? ORDER BY path')
      .all(model, v.version);
    return {
      version: v.version,
      state: v.state,
      archived: v.archived === 1,
      files,
      metadata: JSON.parse(v.metadata) as Record<string, unknown>,
      created_at: v.created_at,
      finalized_at: v.finalized_at,
    };
  }

  /**
   * Streams a file into the object tier, then records it. The version must be open before the
   * bytes are sent and still be open when the row is written.
   */
  async putFile(
    actor: Actor,
    model: string,
    versionOrAlias: string,
    path: string,
    body: AsyncIterable<Uint8Array>,
    expectedSha256?: string,
    /** Read once the body is consumed (the S3 endpoint hashes MD5 as the body streams). */
    etag?: () => string | undefined,
    /**
     * Make the model and the version (open) when they do not exist, in the transaction that
     * records the file — so a body that fails its checks leaves no empty model behind (S3 PUT).
     */
    create = false,
  ): Promise<FileEntry> {
    checkFilePath(path);
    checkSha(expectedSha256);
    if (create && !this.versionExists(model, versionOrAlias)) {
      if (!ID_PATTERN.test(model) || !ID_PATTERN.test(versionOrAlias)) throw new InvalidInput('model and version names are 1-128 letters, digits and . _ : @ -');
      return this.storeFile(actor, model, versionOrAlias, path, body, expectedSha256, undefined, etag, true);
    }
    const v = this.openVersion(model, versionOrAlias);
    return this.storeFile(actor, model, v.version, path, body, expectedSha256, undefined, etag);
  }

  private versionExists(model: string, versionOrAlias: string): boolean {
    try {
      this.resolveVersion(model, versionOrAlias);
      return true;
    } catch (err) {
      if (err instanceof NotFound) return false;
      throw err;
    }
  }

  /** A resumable upload's session, or undefined (S3 checks the key's version against it). */
  uploadSession(id: string): { model: string; version: string; path: string } | undefined {
    return this.db.prepare<{ model: string; version: string; path: string }>('SELECT model, version, path FROM model_uploads WHERE id = ?').get(id);
  }

  /** Removes a file from an open version; false when there was none (S3 answers 204 either way). */
  async deleteFile(actor: Actor, model: string, versionOrAlias: string, path: string): Promise<boolean> {
    checkFilePath(path);
    const v = this.openVersion(model, versionOrAlias);
    return this.writer.write(actor, (tx) => {
      if (this.findVersion(model, v.version)?.state !== 'open') throw new Conflict(`version ${v.version} of ${model} is finalized; its files cannot change`);
      if (!this.db.prepare('SELECT 1 FROM model_files WHERE model = ? AND version = ? AND path = ?').get(model, v.version, path)) return false;
      tx.apply(this.fileDeleted, { model, version: v.version, path });
      tx.audit('models.delete_file', `model:${model}@${v.version}/${path}`);
      return true;
    });
  }

  /**
   * Copies a file into an open version by reference: the new row names the same blob, no byte
   * is copied (S3 CopyObject). The source may be any version, final or open.
   */
  async copyFile(actor: Actor, from: { model: string; version: string; path: string }, to: { model: string; version: string; path: string }): Promise<FileEntry & { etag: string | null }> {
    checkFilePath(to.path);
    const src = this.locateFile(from.model, from.version, from.path);
    const dst = this.openVersion(to.model, to.version);
    return this.writer.write(actor, (tx) => {
      if (this.findVersion(to.model, dst.version)?.state !== 'open') throw new Conflict(`version ${dst.version} of ${to.model} is finalized; its files cannot change`);
      if (!this.db.prepare('SELECT 1 FROM blobs WHERE sha256 = ?').get(src.sha256)) throw new NotFound(`the source file's blob is gone`);
      tx.apply(this.filePut, { model: to.model, version: dst.version, path: to.path, size: src.size, sha256: src.sha256, key: src.key, now: new Date().toISOString(), ...(src.etag ? { etag: src.etag } : {}) });
      tx.audit('models.copy_file', `model:${to.model}@${dst.version}/${to.path}`, { from: `${from.model}@${from.version}/${from.path}`, sha256: src.sha256 });
      return { path: to.path, size: src.size, sha256: src.sha256, etag: src.etag ?? null };
    });
  }

  /**
   * For S3 listings that fold keys into prefixes: one file per model whose name starts with
   * `prefix` (any one stands for its model), or one per version of a model — so listing the
   * bucket's root, or a model's versions, does not read every file (review: 22,000 files a page).
   */
  firstFilePerModel(prefix: string): Array<{ model: string; version: string; path: string; size: number; sha256: string; etag: string | null; created_at: string }> {
    return this.db
      .prepare<{ model: string; version: string; path: string; size: number; sha256: string; etag: string | null; created_at: string }>(
        `SELECT f.model, f.version, f.path, f.size, f.sha256, f.etag, f.created_at FROM model_files f
         JOIN (SELECT model, min(version || '/' || path) AS k FROM model_files WHERE substr(model, 1, length(?)) = ? GROUP BY model) m
           ON m.model = f.model AND f.version || '/' || f.path = m.k`,
      )
      .all(prefix, prefix);
  }

  firstFilePerVersion(model: string): Array<{ version: string; path: string; size: number; sha256: string; etag: string | null; created_at: string }> {
    return this.db
      .prepare<{ version: string; path: string; size: number; sha256: string; etag: string | null; created_at: string }>(
        'SELECT version, min(path) AS path, size, sha256, etag, created_at FROM model_files WHERE model = ? GROUP BY version',
      )
      .all(model);
  }

  /**
   * A model's files in S3 key order after `after` (the key past "model/"), at most `limit`:
   * SQLite's BINARY collation compares UTF-8 bytes, which is S3's order. A recursive listing of
   * a large model is then one indexed range per page, not the whole model.
   */
  filesAfter(model: string, after: string, atLeast: string, limit: number): Array<{ version: string; path: string; size: number; sha256: string; etag: string | null; created_at: string }> {
    return this.db
      .prepare<{ version: string; path: string; size: number; sha256: string; etag: string | null; created_at: string }>(
        "SELECT version, path, size, sha256, etag, created_at FROM model_files WHERE model = ? AND version || '/' || path > ? AND version || '/' || path >= ? ORDER BY version || '/' || path LIMIT ?",
      )
      .all(model, after, atLeast, limit);
  }

  /** A version's files with what S3 listings need (sorted by path). */
  listFiles(model: string, version: string): Array<FileEntry & { etag: string | null; created_at: string }> {
    return this.db
      .prepare<FileEntry & { etag: string | null; created_at: string }>('SELECT path, size, sha256, etag, created_at FROM model_files WHERE model = ? AND version = ? ORDER BY path')
      .all(model, version);
  }

  private openVersion(model: string, versionOrAlias: string): VersionRow {
    const v = this.resolveVersion(model, versionOrAlias);
    if (v.state !== 'open') throw new Conflict(`version ${v.version} of ${model} is finalized; its files cannot change`);
    return v;
  }

  private storeFile(
    actor: Actor,
    model: string,
    version: string,
    path: string,
    body: AsyncIterable<Uint8Array>,
    expectedSha256: string | undefined,
    extra?: (tx: Tx) => void,
    etag?: () => string | undefined,
    create = false,
  ): Promise<FileEntry> {
    return this.storeBlob(actor, body, expectedSha256, (tx, blob) => {
      let now = this.findVersion(model, version);
      if (!now && create) {
        const at = new Date().toISOString();
        if (!this.db.prepare('SELECT 1 FROM models WHERE name = ?').get(model)) tx.apply(this.modelPut, { name: model, description: '', tags: '[]', now: at });
        if (this.db.prepare('SELECT 1 FROM model_aliases WHERE model = ? AND alias = ?').get(model, version)) throw new Conflict(`"${version}" is an alias of ${model}; versions and aliases share one namespace`);
        now = { model, version, state: 'open', metadata: '{}', created_at: at, finalized_at: null };
        tx.apply(this.versionPut, now);
        tx.audit('models.create_version', `model:${model}@${version}`);
      }
      if (now?.state !== 'open') throw new Conflict(`version ${version} of ${model} was finalized during the upload`);
      const tag = etag?.();
      tx.apply(this.filePut, { model, version, path, size: blob.size, sha256: blob.sha256, key: blob.key, now: new Date().toISOString(), ...(tag ? { etag: tag } : {}) });
      extra?.(tx);
      tx.audit('models.put_file', `model:${model}@${version}/${path}`, { size: blob.size, sha256: blob.sha256 });
    }).then((blob) => ({ path, size: blob.size, sha256: blob.sha256 }));
  }

  /**
   * Writes a body to the hot tier, then runs `record` in a write transaction with the blob's
   * sha256, size and the key its bytes live under (an existing blob's key when the content is
   * already stored: the fresh copy is then deleted). `record` inserts the blob row (INSERT OR
   * IGNORE) and whatever references it.
   */
  async storeBlob(
    actor: Actor,
    body: AsyncIterable<Uint8Array>,
    expectedSha256: string | undefined,
    record: (tx: Tx, blob: { sha256: string; size: number; key: string }) => void,
  ): Promise<{ sha256: string; size: number }> {
    checkSha(expectedSha256);
    const key = `blobs/${randomUUID()}`;
    // Until its row commits, the object looks like an orphan to garbage collection.
    this.writing.add(key);
    let put: PutResult;
    try {
      put = await this.store.put(key, body, expectedSha256 ? { expectedSha256 } : {});
    } catch (err) {
      this.writing.delete(key);
      throw err;
    }
    let duplicate = false;
    try {
      await this.writer.write(actor, (tx) => {
        const existing = this.db.prepare<{ key: string }>('SELECT key FROM blobs WHERE sha256 = ?').get(put.sha256);
        duplicate = existing !== undefined;
        record(tx, { sha256: put.sha256, size: put.size, key: existing?.key ?? key });
      });
    } catch (err) {
      await this.store.delete(key).catch(() => undefined);
      throw err;
    } finally {
      this.writing.delete(key);
    }
    if (duplicate) await this.store.delete(key).catch(() => undefined);
    return { sha256: put.sha256, size: put.size };
  }

  /** Keys of blobs being written by this node whose rows have not committed yet. */
  private readonly writing = new Set<string>();

  /**
   * Archives those of `shas` that are still hot and that no version or checkpoint outside the
   * archive uses any more. The one place that rule lives: model versions and checkpoints both
   * archive through here.
   */
  async archiveUnlessInUse(actor: Actor, shas: readonly string[]): Promise<{ moved: number; bytes: number }> {
    const inUse = this.db.prepare<{ sha256: string; key: string; size: number }>(
      `SELECT b.sha256, b.key, b.size FROM blobs b
       WHERE b.sha256 = ? AND b.tier = 'hot'
         AND NOT EXISTS (SELECT 1 FROM model_files f JOIN model_versions v ON v.model = f.model AND v.version = f.version
                         WHERE f.sha256 = b.sha256 AND v.archived = 0)
         AND NOT EXISTS (SELECT 1 FROM checkpoint_files c JOIN checkpoints k ON k.run = c.run AND k.step = c.step
                         WHERE c.sha256 = b.sha256 AND k.archived = 0)`,
    );
    const movable = shas.flatMap((sha) => inUse.all(sha));
    return { moved: movable.length, bytes: await this.moveToArchive(actor, movable) };
  }

  /**
   * Moves hot blobs to the archive tier: verified copy, commit the new location, delete the
   * hot copy, evict from the cache. A crash at any step leaves a readable blob (at worst an
   * orphan copy for GC).
   */
  private async moveToArchive(actor: Actor, blobs: Array<{ sha256: string; key: string; size: number }>): Promise<number> {
    const archive = this.archiveStore();
    let bytes = 0;
    for (const b of blobs) {
      const key = `blobs/${randomUUID()}`;
      await archive.put(key, (await this.store.get(b.key)) as AsyncIterable<Uint8Array>, { expectedSha256: b.sha256 });
      await this.writer.write(actor, (tx) => tx.apply(this.blobMoved, { sha256: b.sha256, tier: 'archive', key }));
      await this.store.delete(b.key);
      await this.cache?.remove(b.sha256);
      bytes += b.size;
    }
    return bytes;
  }

  // Resumable uploads, in the manner of S3 multipart: parts are stored as objects under
  // uploads/<id>/, a dropped part is simply sent again, and completion streams the parts in
  // order into one blob (hashed and checked like any upload) before the file row commits.

  async startUpload(actor: Actor, model: string, versionOrAlias: string, path: string): Promise<{ upload_id: string; version: string; path: string }> {
    checkFilePath(path);
    const v = this.openVersion(model, versionOrAlias);
    const id = randomUUID();
    await this.writer.write(actor, (tx) => {
      tx.apply(this.uploadStarted, { id, model, version: v.version, path, created_at: new Date().toISOString() });
      tx.audit('models.start_upload', `model:${model}@${v.version}/${path}`, { upload_id: id });
    });
    return { upload_id: id, version: v.version, path };
  }

  private session(id: string, model: string, path: string) {
    const u = this.db.prepare<{ id: string; model: string; version: string; path: string }>('SELECT * FROM model_uploads WHERE id = ?').get(id);
    if (!u || u.model !== model || u.path !== path) throw new NotFound(`upload ${id} does not exist for ${model}/${path}`);
    return u;
  }

  async putPart(model: string, path: string, uploadId: string, part: number, body: AsyncIterable<Uint8Array>, expectedSha256?: string): Promise<{ part: number; size: number; sha256: string }> {
    if (!Number.isInteger(part) || part < 1 || part > 10_000) throw new InvalidInput('part must be an integer from 1 to 10000');
    checkSha(expectedSha256);
    this.session(uploadId, model, path);
    // The store hashes what it writes anyway: a declared SHA-256 is checked there, not twice.
    const put = await this.store.put(`uploads/${uploadId}/${String(part).padStart(5, '0')}`, body, expectedSha256 ? { expectedSha256 } : {});
    return { part, size: put.size, sha256: put.sha256 };
  }

  async listParts(model: string, path: string, uploadId: string) {
    this.session(uploadId, model, path);
    const parts: Array<{ part: number; size: number }> = [];
    for await (const o of this.store.list(`uploads/${uploadId}/`)) parts.push({ part: Number(o.key.slice(o.key.lastIndexOf('/') + 1)), size: o.size });
    return { upload_id: uploadId, parts };
  }

  async completeUpload(
    actor: Actor,
    model: string,
    path: string,
    uploadId: string,
    expectedSha256?: string,
    /**
     * For S3's CompleteMultipartUpload: the parts to join (ascending; others are dropped), a
     * wrapper that sees each part's bytes as they are joined (the part MD5s), and the ETag to
     * record, read once the body is consumed. Without them: every part, numbered 1..N.
     */
    s3?: { parts: number[]; eachPart: (part: number, body: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>; etag: () => string | undefined },
  ): Promise<FileEntry> {
    checkSha(expectedSha256);
    const u = this.session(uploadId, model, path);
    const { parts: stored } = await this.listParts(model, path, uploadId);
    let parts = stored;
    if (s3) {
      const have = new Map(stored.map((p) => [p.part, p]));
      parts = s3.parts.map((n) => {
        const p = have.get(n);
        if (!p) throw new InvalidInput(`upload ${uploadId} has no part ${n}`);
        return p;
      });
    } else {
      parts.forEach((p, i) => {
        if (p.part !== i + 1) throw new InvalidInput(`upload ${uploadId} is missing part ${i + 1}`);
      });
    }
    if (parts.length === 0) throw new InvalidInput(`upload ${uploadId} has no parts`);
    const store = this.store;
    const partKey = (n: number) => `uploads/${uploadId}/${String(n).padStart(5, '0')}`;
    async function* concatenated() {
      for (const p of parts) {
        const body = (await store.get(partKey(p.part))) as AsyncIterable<Uint8Array>;
        yield* s3 ? s3.eachPart(p.part, body) : body;
      }
    }
    const entry = await this.storeFile(
      actor,
      model,
      u.version,
      path,
      concatenated(),
      expectedSha256,
      (tx) => {
        // Still open when the file is recorded: an abort, or another complete of the same upload,
        // that committed meanwhile wins, and this one stores nothing (review: both had succeeded).
        if (!this.db.prepare('SELECT 1 FROM model_uploads WHERE id = ?').get(uploadId)) throw new NotFound(`upload ${uploadId} does not exist for ${model}/${path}: aborted or completed meanwhile`);
        tx.apply(this.uploadEnded, { id: uploadId });
      },
      s3?.etag,
    );
    for (const p of stored) await this.store.delete(partKey(p.part)).catch(() => undefined);
    return entry;
  }

  /** Ends a resumable upload without a file: its parts are deleted (S3's AbortMultipartUpload). */
  async abortUpload(actor: Actor, model: string, path: string, uploadId: string): Promise<void> {
    this.session(uploadId, model, path);
    const { parts } = await this.listParts(model, path, uploadId);
    await this.writer.write(actor, (tx) => {
      tx.apply(this.uploadEnded, { id: uploadId });
      tx.audit('models.abort_upload', `model:${model}/${path}`, { upload_id: uploadId });
    });
    for (const p of parts) await this.store.delete(`uploads/${uploadId}/${String(p.part).padStart(5, '0')}`).catch(() => undefined);
  }

  /** The file's entry and where its bytes live. */
  locateFile(model: string, versionOrAlias: string, path: string): FileEntry & { key: string; tier: string; etag?: string | null; created_at?: string } {
    checkFilePath(path);
    const v = this.resolveVersion(model, versionOrAlias);
    const f = this.db
      .prepare<FileEntry & { key: string; tier: string; etag: string | null; created_at: string }>(
        'SELECT f.path, f.size, f.sha256, f.etag, f.created_at, b.key, b.tier FROM model_files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.model = ? AND f.version = ? AND f.path = ?',
      )
      .get(model, v.version, path);
    if (!f) throw new NotFound(`${model}@${v.version} has no file ${path}`);
    return f;
  }

  /**
   * The file's bytes, through the model cache when there is one. A blob the registry
   * references but the tier no longer holds is data loss: ObjectMissing (a 500), reported to
   * `events.objectMissing`, before anything is streamed.
   */
  async openFile(f: { key: string; sha256: string; size: number; tier?: string }, range?: { start: number; end: number }): Promise<Readable> {
    const tier = f.tier === 'archive' ? 'archive' : 'hot';
    try {
      // Archived files are read straight from the archive tier (slower) and not cached: an
      // archived version is not expected to be loaded onto GPUs again soon.
      if (tier === 'archive') return await this.archiveStore().get(f.key, range);
      if (!this.cache) return await this.store.get(f.key, range);
      return await this.cache.read(f.sha256, f.size, (r) => this.store.get(f.key, r), range);
    } catch (err) {
      throw err instanceof NotFound ? this.missing(f.sha256, tier, f.key) : err;
    }
  }

  /** For HEAD: that the file's bytes are there (in the cache or the tier), without reading them. */
  async checkFile(f: { key: string; sha256: string; tier?: string }): Promise<void> {
    const tier = f.tier === 'archive' ? 'archive' : 'hot';
    if (tier === 'hot' && this.cache?.has(f.sha256)) return;
    if (!(await (tier === 'archive' ? this.archiveStore() : this.store).head(f.key))) throw this.missing(f.sha256, tier, f.key);
  }

  private missing(sha256: string, tier: string, key: string): ObjectMissing {
    this.events.objectMissing?.(tier, key);
    return new ObjectMissing(`this file (blob ${sha256})`, tier);
  }

  private archiveStore(): ObjectStore {
    if (!this.archive) throw new Unavailable('no archive tier is configured (objects.archive)');
    return this.archive;
  }

  /**
   * Finalizes a version, marks it archived and moves the blobs only it still needs to the
   * archive tier (see archiveUnlessInUse and moveToArchive for the rule and the crash order).
   */
  async archiveVersion(actor: Actor, model: string, versionOrAlias: string): Promise<{ version: string; moved: number; bytes: number }> {
    this.archiveStore(); // fail before changing anything when no archive tier exists
    const v = this.resolveVersion(model, versionOrAlias);
    await this.writer.write(actor, (tx) => {
      tx.apply(this.versionPut, { ...v, state: 'final', finalized_at: v.finalized_at ?? new Date().toISOString(), archived: 1 } as VersionRow);
      tx.audit('models.archive', `model:${model}@${v.version}`);
    });
    const shas = this.db
      .prepare<{ sha256: string }>('SELECT DISTINCT sha256 FROM model_files WHERE model = ? AND version = ?')
      .all(model, v.version)
      .map((r) => r.sha256);
    const { moved, bytes } = await this.archiveUnlessInUse(actor, shas);
    return { version: v.version, moved, bytes };
  }

  /** sha256 of every file of a version that a pinned alias points at: never evicted. */
  pinnedBlobs(): Set<string> {
    if (this.pinnedAliases.length === 0) return new Set();
    const marks = this.pinnedAliases.map(() => '?').join(', ');
    const rows = this.db
      .prepare<{ sha256: string }>(
        `SELECT DISTINCT f.sha256 FROM model_aliases a JOIN model_files f ON f.model = a.model AND f.version = a.version WHERE a.alias IN (${marks})`,
      )
      .all(...this.pinnedAliases);
    return new Set(rows.map((r) => r.sha256));
  }

  /** Fills the cache with a version's files; resolves when all are local. */
  async prefetch(model: string, versionOrAlias: string): Promise<{ files: number; bytes: number }> {
    const v = this.resolveVersion(model, versionOrAlias);
    const files = this.db
      .prepare<{ sha256: string; size: number; key: string }>(
        'SELECT f.sha256, f.size, b.key FROM model_files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.model = ? AND f.version = ?',
      )
      .all(model, v.version);
    let bytes = 0;
    for (const f of files) {
      await this.cache?.ensure(f.sha256, f.size, (r) => this.store.get(f.key, r));
      bytes += f.size;
    }
    return { files: files.length, bytes };
  }

  /** Versions created before `cutoffIso` that no alias and no rollout points at. */
  expiredVersions(cutoffIso: string): Array<{ model: string; version: string; created_at: string }> {
    return this.db
      .prepare<{ model: string; version: string; created_at: string }>(
        `SELECT v.model, v.version, v.created_at FROM model_versions v
         WHERE v.created_at < ?
           AND NOT EXISTS (SELECT 1 FROM model_aliases a WHERE a.model = v.model AND a.version = v.version)
           AND NOT EXISTS (SELECT 1 FROM model_rollouts r, json_each(r.variants) j
                           WHERE r.model = v.model AND json_extract(j.value, '$.version') = v.version)
         ORDER BY v.created_at`,
      )
      .all(cutoffIso);
  }

  deleteVersion(tx: Tx, model: string, version: string): void {
    tx.apply(this.versionDeleted, { model, version });
  }

  /**
   * Removes blobs nothing references, once older than `graceMs`: objects under blobs/ with no
   * row (the leftover of a crash between blob write and commit, or of a lost race), rows no
   * file points at, and incomplete puts. The grace period protects uploads in flight, whose
   * object exists before its row.
   */
  async collectGarbage(
    actor: Actor,
    graceMs: number,
    uploadTtlMs = 7 * 86_400_000,
  ): Promise<{ orphan_objects: number; unreferenced_blobs: number; incomplete: number; expired_uploads: number; bytes: number }> {
    const cutoff = Date.now() - graceMs;
    const known = new Set(this.db.prepare<{ key: string }>('SELECT key FROM blobs').all().map((r) => r.key));
    let orphanObjects = 0;
    let bytes = 0;
    const referenced = this.db.prepare('SELECT 1 FROM blobs WHERE key = ?');
    for await (const o of this.store.list('blobs/')) {
      if (known.has(o.key) || (o.modified && o.modified.getTime() > cutoff)) continue;
      // Asked again at the moment of deleting: an upload may have committed since the listing
      // began, and one still in flight has no row yet whatever the grace period.
      if (this.writing.has(o.key) || referenced.get(o.key)) continue;
      await this.store.delete(o.key);
      orphanObjects++;
      bytes += o.size;
    }
    const cutoffIso = new Date(cutoff).toISOString();
    const unreferenced = this.db
      .prepare<{ sha256: string; key: string; size: number; tier: string }>(
        `SELECT sha256, key, size, tier FROM blobs b WHERE created_at < ?
           AND NOT EXISTS (SELECT 1 FROM model_files f WHERE f.sha256 = b.sha256)
           AND NOT EXISTS (SELECT 1 FROM checkpoint_files c WHERE c.sha256 = b.sha256)`,
      )
      .all(cutoffIso);
    const blobRow = this.db.prepare('SELECT 1 FROM blobs WHERE sha256 = ?');
    let removedBlobs = 0;
    for (const b of unreferenced) {
      // Row first, then bytes: a crash in between leaves an orphan object, never a dangling row.
      // The applier keeps a row that gained a reference since the listing (an upload of the
      // same content reused its key): then the bytes stay too.
      const gone = await this.writer.write(actor, (tx) => {
        tx.apply(this.blobDeleted, { sha256: b.sha256 });
        return blobRow.get(b.sha256) === undefined;
      });
      if (!gone) continue;
      removedBlobs++;
      await (b.tier === 'archive' ? this.archiveStore() : this.store).delete(b.key);
      await this.cache?.remove(b.sha256);
      bytes += b.size;
    }
    const incomplete = (await this.store.sweepIncomplete?.(graceMs)) ?? 0;
    // Resumable uploads nobody completed: the session ends (row first), then its parts go. Parts
    // whose session row is already gone (a crash in between) go once past the grace period.
    const expiredBefore = new Date(Date.now() - uploadTtlMs).toISOString();
    const expired = this.db.prepare<{ id: string; model: string; version: string; path: string }>('SELECT id, model, version, path FROM model_uploads WHERE created_at < ?').all(expiredBefore);
    for (const u of expired) {
      await this.writer.write(actor, (tx) => {
        tx.apply(this.uploadEnded, { id: u.id });
        tx.audit('models.upload_expired', `model:${u.model}/${u.version}/${u.path}`, { upload_id: u.id });
      });
    }
    const live = new Set(this.db.prepare<{ id: string }>('SELECT id FROM model_uploads').all().map((r) => r.id));
    for await (const o of this.store.list('uploads/')) {
      const id = o.key.split('/')[1]!;
      if (live.has(id) || (o.modified && o.modified.getTime() > cutoff && !expired.some((u) => u.id === id))) continue;
      await this.store.delete(o.key);
      bytes += o.size;
    }
    return { orphan_objects: orphanObjects, unreferenced_blobs: removedBlobs, incomplete, expired_uploads: expired.length, bytes };
  }

  bytesByTier(): Array<{ tier: string; bytes: number }> {
    return this.db.prepare<{ tier: string; bytes: number }>('SELECT tier, sum(size) AS bytes FROM blobs GROUP BY tier').all();
  }

  isPinnedAlias(alias: string): boolean {
    return this.pinnedAliases.includes(alias);
  }

  finalize(actor: Actor, model: string, versionOrAlias: string) {
    return this.writer.write(actor, (tx) => {
      const v = this.resolveVersion(model, versionOrAlias);
      if (v.state === 'final') return { version: v.version, state: 'final' as const };
      tx.apply(this.versionPut, { ...v, state: 'final', finalized_at: new Date().toISOString() });
      tx.audit('models.finalize', `model:${model}@${v.version}`);
      return { version: v.version, state: 'final' as const };
    });
  }

  setAlias(actor: Actor, model: string, alias: string, version: string) {
    return this.writer.write(actor, (tx) => {
      this.getModel(model);
      if (!this.findVersion(model, version)) throw new NotFound(`model ${model} has no version ${version}`);
      if (this.findVersion(model, alias)) throw new Conflict(`"${alias}" is a version of ${model}; versions and aliases share one namespace`);
      const previous = this.db.prepare<{ version: string }>('SELECT version FROM model_aliases WHERE model = ? AND alias = ?').get(model, alias)?.version ?? null;
      tx.apply(this.aliasSet, { model, alias, version, previous, token_id: actor.tokenId, now: new Date().toISOString() });
      tx.audit('models.set_alias', `model:${model}#${alias}`, { version, previous });
      return { model, alias, version, previous };
    });
  }

  setRollout(actor: Actor, model: string, variants: RolloutVariant[]) {
    const total = variants.reduce((s, v) => s + v.weight, 0);
    if (total !== 100) throw new InvalidInput(`rollout weights must sum to 100, not ${total}`);
    return this.writer.write(actor, (tx) => {
      this.getModel(model);
      for (const v of variants) if (!this.findVersion(model, v.version)) throw new InvalidInput(`model ${model} has no version ${v.version}`);
      tx.apply(this.rolloutSet, { model, variants: JSON.stringify(variants), now: new Date().toISOString() });
      tx.audit('models.set_rollout', `model:${model}`, { variants });
      return { model, variants };
    });
  }

  /**
   * Sticky resolution: the key's SHA-256 picks a point in 0..99 and the variants divide that
   * range in their listed order, so a key keeps its version while the rollout is unchanged.
   */
  resolveRollout(model: string, key: string): { version: string } {
    const row = this.db.prepare<{ variants: string }>('SELECT variants FROM model_rollouts WHERE model = ?').get(model);
    if (!row) throw new NotFound(`model ${model} has no rollout`);
    const variants = JSON.parse(row.variants) as RolloutVariant[];
    const point = createHash('sha256').update(`${model}\0${key}`).digest().readUInt32BE(0) % 100;
    let edge = 0;
    for (const v of variants) {
      edge += v.weight;
      if (point < edge) return { version: v.version };
    }
    return { version: variants[variants.length - 1]!.version };
  }
}
