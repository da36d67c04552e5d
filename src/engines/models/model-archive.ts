import { randomUUID } from 'node:crypto';
import { Unavailable } from '../errors.js';
import type { ObjectStore } from '../objects/object-store.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Writer } from '../sql/writer.js';
import type { ModelCache } from './model-cache.js';
import type { ModelChanges } from './model-changes.js';
import type { VersionRow } from './model-schema.js';

// The archive tier: blobs that only archived versions and checkpoints still use move there
// (verified copy, commit the new location, delete the hot copy, evict from the cache), and are
// read from there without caching. A crash at any step leaves a readable blob — at worst an
// orphan copy for garbage collection.

export class ModelArchive {
  constructor(
    private readonly db: SqlDatabase,
    private readonly writer: Writer,
    private readonly changes: ModelChanges,
    private readonly hot: ObjectStore,
    private readonly tier: ObjectStore | undefined,
    private readonly cache: ModelCache | undefined,
    /** A version id or alias → its row (the registry's rule). */
    private readonly resolveVersion: (model: string, versionOrAlias: string) => VersionRow,
  ) {}

  /** The archive tier; Unavailable when none is configured. */
  store(): ObjectStore {
    if (!this.tier) throw new Unavailable('no archive tier is configured (objects.archive)');
    return this.tier;
  }

  /**
   * Finalizes a version, marks it archived and moves the blobs only it still needs to the
   * archive tier.
   */
  async archiveVersion(actor: Actor, model: string, versionOrAlias: string): Promise<{ version: string; moved: number; bytes: number }> {
    this.store(); // fail before changing anything when no archive tier exists
    const v = this.resolveVersion(model, versionOrAlias);
    await this.writer.write(actor, (tx) => {
      tx.apply(this.changes.versionPut, { ...v, state: 'final', finalized_at: v.finalized_at ?? new Date().toISOString(), archived: 1 });
      tx.audit('models.archive', `model:${model}@${v.version}`);
    });
    const shas = this.db
      .prepare<{ sha256: string }>('SELECT DISTINCT sha256 FROM model_files WHERE model = ? AND version = ?')
      .all(model, v.version)
      .map((r) => r.sha256);
    const { moved, bytes } = await this.archiveUnlessInUse(actor, shas);
    return { version: v.version, moved, bytes };
  }

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
    return { moved: movable.length, bytes: await this.move(actor, movable) };
  }

  private async move(actor: Actor, blobs: Array<{ sha256: string; key: string; size: number }>): Promise<number> {
    const archive = this.store();
    let bytes = 0;
    for (const b of blobs) {
      const key = `blobs/${randomUUID()}`;
      await archive.put(key, (await this.hot.get(b.key)) as AsyncIterable<Uint8Array>, { expectedSha256: b.sha256 });
      await this.writer.write(actor, (tx) => tx.apply(this.changes.blobMoved, { sha256: b.sha256, tier: 'archive', key }));
      await this.hot.delete(b.key);
      await this.cache?.remove(b.sha256);
      bytes += b.size;
    }
    return bytes;
  }
}
