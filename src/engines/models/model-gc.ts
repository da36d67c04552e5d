import type { ObjectStore } from '../objects/object-store.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Writer } from '../sql/writer.js';
import type { BlobWriter } from './blob-writer.js';
import type { ModelCache } from './model-cache.js';
import type { ModelChanges } from './model-changes.js';
import type { ModelArchive } from './model-archive.js';
import type { ModelUploads } from './model-uploads.js';

// Garbage collection of the model store: objects under blobs/ with no row (the leftover of a
// crash between blob write and commit, or of a lost race), blob rows no file or checkpoint
// points at, incomplete puts, and resumable uploads nobody completed. Everything younger than
// the grace period stays: an upload in flight has its object before its row.

export interface GarbageReport {
  orphan_objects: number;
  unreferenced_blobs: number;
  incomplete: number;
  expired_uploads: number;
  bytes: number;
}

export class ModelGarbage {
  constructor(
    private readonly db: SqlDatabase,
    private readonly writer: Writer,
    private readonly changes: ModelChanges,
    private readonly hot: ObjectStore,
    private readonly archive: ModelArchive,
    private readonly cache: ModelCache | undefined,
    private readonly blobs: BlobWriter,
    private readonly uploads: ModelUploads,
  ) {}

  async collect(actor: Actor, graceMs: number, uploadTtlMs = 7 * 86_400_000): Promise<GarbageReport> {
    const cutoff = Date.now() - graceMs;
    const known = new Set(this.db.prepare<{ key: string }>('SELECT key FROM blobs').all().map((r) => r.key));
    let orphanObjects = 0;
    let bytes = 0;
    const referenced = this.db.prepare('SELECT 1 FROM blobs WHERE key = ?');
    const liveUpload = this.db.prepare('SELECT 1 FROM model_uploads WHERE id = ?');
    for await (const o of this.hot.list('blobs/')) {
      if (known.has(o.key) || (o.modified && o.modified.getTime() > cutoff)) continue;
      // A sealed upload's file whose commit a crash prevented: its upload's next completion uses it.
      const sealed = /^blobs\/upload-(.+)$/.exec(o.key);
      if (sealed && liveUpload.get(sealed[1]!)) continue;
      // Asked again at the moment of deleting: an upload may have committed since the listing
      // began, and one still in flight has no row yet whatever the grace period.
      if (this.blobs.isWriting(o.key) || referenced.get(o.key)) continue;
      await this.hot.delete(o.key);
      orphanObjects++;
      bytes += o.size;
    }
    const unreferenced = this.db
      .prepare<{ sha256: string; key: string; size: number; tier: string }>(
        `SELECT sha256, key, size, tier FROM blobs b WHERE created_at < ?
           AND NOT EXISTS (SELECT 1 FROM model_files f WHERE f.sha256 = b.sha256)
           AND NOT EXISTS (SELECT 1 FROM checkpoint_files c WHERE c.sha256 = b.sha256)`,
      )
      .all(new Date(cutoff).toISOString());
    const blobRow = this.db.prepare('SELECT 1 FROM blobs WHERE sha256 = ?');
    let removedBlobs = 0;
    for (const b of unreferenced) {
      // Row first, then bytes: a crash in between leaves an orphan object, never a dangling row.
      // The applier keeps a row that gained a reference since the listing (an upload of the
      // same content reused its key): then the bytes stay too.
      const gone = await this.writer.write(actor, (tx) => {
        tx.apply(this.changes.blobDeleted, { sha256: b.sha256 });
        return blobRow.get(b.sha256) === undefined;
      });
      if (!gone) continue;
      removedBlobs++;
      await (b.tier === 'archive' ? this.archive.store() : this.hot).delete(b.key);
      await this.cache?.remove(b.sha256);
      bytes += b.size;
    }
    const incomplete = (await this.hot.sweepIncomplete?.(graceMs)) ?? 0;
    const uploads = await this.uploads.collect(actor, uploadTtlMs, cutoff);
    return { orphan_objects: orphanObjects, unreferenced_blobs: removedBlobs, incomplete, expired_uploads: uploads.expired, bytes: bytes + uploads.bytes };
  }
}
