import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { FileEntry, VersionRow } from './model-schema.js';

// Every write to the model store's tables, as change-log entries: the primary applies them in
// its transactions, replicas and restores replay the same appliers. The names ('models', 'put'
// …) are the log's format: renaming one breaks replay of older logs.

export type FilePut = FileEntry & { model: string; version: string; key: string; now: string; etag?: string | null };
export type PartPut = { upload_id: string; part: number; size: number; sha256: string; md5: string | null; key: string; offset: number; now: string; stripe?: number };

export class ModelChanges {
  readonly modelPut: ChangeType<{ name: string; description: string; tags: string; now: string }>;
  readonly versionPut: ChangeType<VersionRow>;
  readonly filePut: ChangeType<FilePut>;
  readonly fileDeleted: ChangeType<{ model: string; version: string; path: string }>;
  readonly versionDeleted: ChangeType<{ model: string; version: string }>;
  readonly aliasSet: ChangeType<{ model: string; alias: string; version: string; previous: string | null; token_id: string; now: string }>;
  readonly blobDeleted: ChangeType<{ sha256: string }>;
  readonly blobMoved: ChangeType<{ sha256: string; tier: string; key: string }>;
  readonly uploadStarted: ChangeType<{ id: string; model: string; version: string; path: string; created_at: string; kind?: string }>;
  readonly uploadEnded: ChangeType<{ id: string }>;
  readonly partPut: ChangeType<PartPut>;
  readonly rolloutSet: ChangeType<{ model: string; variants: string; now: string }>;

  constructor(changes: ChangeLog) {
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
    this.filePut = changes.define<FilePut>('models', 'put_file', (db, f) => {
      db.prepare('INSERT OR IGNORE INTO blobs (sha256, size, tier, key, created_at) VALUES (?, ?, ?, ?, ?)').run(f.sha256, f.size, 'hot', f.key, f.now);
      db.prepare(
        `INSERT INTO model_files (model, version, path, size, sha256, created_at, etag) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (model, version, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at, etag = excluded.etag`,
      ).run(f.model, f.version, f.path, f.size, f.sha256, f.now, f.etag ?? null);
    });
    // A file leaves an open version (S3 DeleteObject); its blob goes with the next garbage
    // collection once nothing references it.
    this.fileDeleted = changes.define<{ model: string; version: string; path: string }>('models', 'delete_file', (db, f) => {
      db.prepare('DELETE FROM model_files WHERE model = ? AND version = ? AND path = ?').run(f.model, f.version, f.path);
    });
    // Retention: the version's rows go; its blobs, once nothing references them, go with the
    // next garbage collection (after its grace period), like any unreferenced blob.
    this.versionDeleted = changes.define<{ model: string; version: string }>('models', 'delete_version', (db, v) => {
      db.prepare("DELETE FROM model_upload_parts WHERE upload_id IN (SELECT id FROM model_uploads WHERE kind = 'model' AND model = ? AND version = ?)").run(v.model, v.version);
      db.prepare("DELETE FROM model_uploads WHERE kind = 'model' AND model = ? AND version = ?").run(v.model, v.version);
      db.prepare('DELETE FROM model_files WHERE model = ? AND version = ?').run(v.model, v.version);
      db.prepare('DELETE FROM model_versions WHERE model = ? AND version = ?').run(v.model, v.version);
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
    // Kept when something references the blob again by the time this applies (an upload of
    // the same content reused its key after the garbage collector listed it).
    this.blobDeleted = changes.define<{ sha256: string }>('models', 'delete_blob', (db, b) => {
      db.prepare(
        'DELETE FROM blobs WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM model_files WHERE sha256 = ?) AND NOT EXISTS (SELECT 1 FROM checkpoint_files WHERE sha256 = ?)',
      ).run(b.sha256, b.sha256, b.sha256);
    });
    this.blobMoved = changes.define<{ sha256: string; tier: string; key: string }>('models', 'move_blob', (db, b) => {
      db.prepare('UPDATE blobs SET tier = ?, key = ? WHERE sha256 = ?').run(b.tier, b.key, b.sha256);
    });
    this.uploadStarted = changes.define('models', 'start_upload', (db, u) => {
      db.prepare('INSERT INTO model_uploads (id, model, version, path, created_at, kind) VALUES (?, ?, ?, ?, ?, ?)').run(u.id, u.model, u.version, u.path, u.created_at, u.kind ?? 'model');
    });
    this.uploadEnded = changes.define<{ id: string }>('models', 'end_upload', (db, u) => {
      db.prepare('DELETE FROM model_upload_parts WHERE upload_id = ?').run(u.id);
      db.prepare('DELETE FROM model_uploads WHERE id = ?').run(u.id);
    });
    // The first part written into the assembly file fixes the upload's stripe (slot length).
    this.partPut = changes.define<PartPut>('models', 'put_part', (db, p) => {
      db.prepare(
        `INSERT INTO model_upload_parts (upload_id, part, size, sha256, md5, key, offset, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (upload_id, part) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, md5 = excluded.md5, key = excluded.key, offset = excluded.offset, created_at = excluded.created_at`,
      ).run(p.upload_id, p.part, p.size, p.sha256, p.md5, p.key, p.offset, p.now);
      if (p.stripe !== undefined) db.prepare('UPDATE model_uploads SET stripe = ? WHERE id = ? AND stripe IS NULL').run(p.stripe, p.upload_id);
    });
    this.rolloutSet = changes.define('models', 'set_rollout', (db, r) => {
      db.prepare(
        `INSERT INTO model_rollouts (model, variants, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (model) DO UPDATE SET variants = excluded.variants, updated_at = excluded.updated_at`,
      ).run(r.model, r.variants, r.now);
    });
  }
}
