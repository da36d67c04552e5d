import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Conflict, InvalidInput, NotFound, ObjectMissing } from '../errors.js';
import type { ObjectStore } from '../objects/object-store.js';
import type { ChangeLog } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import { BlobWriter, type StoredBlob } from './blob-writer.js';
import { ModelArchive } from './model-archive.js';
import type { ModelCache } from './model-cache.js';
import { ModelChanges } from './model-changes.js';
import { ModelGarbage } from './model-gc.js';
import { ModelRollouts } from './model-rollouts.js';
import { checkFilePath, checkSha, ID_PATTERN, type FileEntry, type VersionRow } from './model-schema.js';
import { ModelUploads } from './model-uploads.js';

export { checkFilePath, modelMigrations, type FileEntry, type RolloutVariant } from './model-schema.js';

// Models, their versions and files, and aliases with their history; the reads that find a
// file's bytes (through the model cache). The rest of the model store is one module each, here
// as members: `blobs` (bytes before references, dedup by sha256), `uploads` (resumable and S3
// multipart uploads), `archive` (the archive tier), `rollouts`, `gc`. The S3 and Hugging Face
// adapters and the native routes call those pieces by name.

export class ModelRegistry {
  readonly blobs: BlobWriter;
  readonly uploads: ModelUploads;
  readonly archive: ModelArchive;
  readonly rollouts: ModelRollouts;
  readonly gc: ModelGarbage;
  private readonly changes: ModelChanges;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly store: ObjectStore,
    private readonly cache?: ModelCache,
    private readonly pinnedAliases: readonly string[] = [],
    archiveTier?: ObjectStore,
    private readonly events: { objectMissing?(tier: string, key: string): void } = {},
  ) {
    this.changes = new ModelChanges(changes);
    this.blobs = new BlobWriter(db, writer, store);
    this.archive = new ModelArchive(db, writer, this.changes, store, archiveTier, cache, (m, v) => this.resolveVersion(m, v));
    this.uploads = new ModelUploads(db, writer, this.changes, store, this.blobs, {
      openVersion: (m, v) => this.openVersion(m, v),
      record: (tx, m, v, p, blob, etag) => this.recordFile(tx, m, v, p, blob, etag),
    });
    this.rollouts = new ModelRollouts(db, writer, this.changes, (m) => void this.getModel(m));
    this.gc = new ModelGarbage(db, writer, this.changes, store, this.archive, cache, this.blobs, this.uploads);
  }

  putModel(actor: Actor, name: string, input: { description?: string | undefined; tags?: string[] | undefined }): Promise<{ created: boolean }> {
    return this.writer.write(actor, (tx) => {
      const existing = this.db.prepare<{ description: string; tags: string }>('SELECT description, tags FROM models WHERE name = ?').get(name);
      tx.apply(this.changes.modelPut, {
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
    return { ...m, tags: JSON.parse(m.tags) as string[], versions, aliases, alias_history, rollout: this.rollouts.get(name) };
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
      tx.apply(this.changes.versionPut, row);
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
      return this.storeFile(actor, model, versionOrAlias, path, body, expectedSha256, etag, true);
    }
    const v = this.openVersion(model, versionOrAlias);
    return this.storeFile(actor, model, v.version, path, body, expectedSha256, etag);
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

  /** Removes a file from an open version; false when there was none (S3 answers 204 either way). */
  async deleteFile(actor: Actor, model: string, versionOrAlias: string, path: string): Promise<boolean> {
    checkFilePath(path);
    const v = this.openVersion(model, versionOrAlias);
    return this.writer.write(actor, (tx) => {
      if (this.findVersion(model, v.version)?.state !== 'open') throw new Conflict(`version ${v.version} of ${model} is finalized; its files cannot change`);
      if (!this.db.prepare('SELECT 1 FROM model_files WHERE model = ? AND version = ? AND path = ?').get(model, v.version, path)) return false;
      tx.apply(this.changes.fileDeleted, { model, version: v.version, path });
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
      tx.apply(this.changes.filePut, { model: to.model, version: dst.version, path: to.path, size: src.size, sha256: src.sha256, key: src.key, now: new Date().toISOString(), ...(src.etag ? { etag: src.etag } : {}) });
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

  private storeFile(actor: Actor, model: string, version: string, path: string, body: AsyncIterable<Uint8Array>, expectedSha256: string | undefined, etag?: () => string | undefined, create = false): Promise<FileEntry> {
    return this.blobs.put(actor, body, expectedSha256, (tx, blob) => this.recordFile(tx, model, version, path, blob, etag?.(), create)).then((blob) => ({ path, size: blob.size, sha256: blob.sha256 }));
  }

  /**
   * Records a stored blob as a file of an open version, in the caller's transaction. With
   * `create`, makes the model and the version (open) when they do not exist — so a body that
   * fails its checks leaves no empty model behind (S3 PUT).
   */
  private recordFile(tx: Tx, model: string, version: string, path: string, blob: StoredBlob, etag?: string, create = false): void {
    let now = this.findVersion(model, version);
    if (!now && create) {
      const at = new Date().toISOString();
      if (!this.db.prepare('SELECT 1 FROM models WHERE name = ?').get(model)) tx.apply(this.changes.modelPut, { name: model, description: '', tags: '[]', now: at });
      if (this.db.prepare('SELECT 1 FROM model_aliases WHERE model = ? AND alias = ?').get(model, version)) throw new Conflict(`"${version}" is an alias of ${model}; versions and aliases share one namespace`);
      now = { model, version, state: 'open', metadata: '{}', created_at: at, finalized_at: null };
      tx.apply(this.changes.versionPut, now);
      tx.audit('models.create_version', `model:${model}@${version}`);
    }
    if (now?.state !== 'open') throw new Conflict(`version ${version} of ${model} was finalized during the upload`);
    tx.apply(this.changes.filePut, { model, version, path, size: blob.size, sha256: blob.sha256, key: blob.key, now: new Date().toISOString(), ...(etag ? { etag } : {}) });
    tx.audit('models.put_file', `model:${model}@${version}/${path}`, { size: blob.size, sha256: blob.sha256 });
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
      if (tier === 'archive') return await this.archive.store().get(f.key, range);
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
    if (!(await (tier === 'archive' ? this.archive.store() : this.store).head(f.key))) throw this.missing(f.sha256, tier, f.key);
  }

  private missing(sha256: string, tier: string, key: string): ObjectMissing {
    this.events.objectMissing?.(tier, key);
    return new ObjectMissing(`this file (blob ${sha256})`, tier);
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
    tx.apply(this.changes.versionDeleted, { model, version });
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
      tx.apply(this.changes.versionPut, { ...v, state: 'final', finalized_at: new Date().toISOString() });
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
      tx.apply(this.changes.aliasSet, { model, alias, version, previous, token_id: actor.tokenId, now: new Date().toISOString() });
      tx.audit('models.set_alias', `model:${model}#${alias}`, { version, previous });
      return { model, alias, version, previous };
    });
  }
}
