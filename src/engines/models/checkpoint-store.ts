import { NotFound } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import type { StoredBlob } from './blob-writer.js';
import { checkFilePath, type FileEntry, type ModelRegistry } from './model-registry.js';

// Training checkpoints: files per (run, step), stored as blobs like model files (deduplicated
// by sha256, verified, bytes before rows). A retention policy keeps the newest K steps of each
// run hot, archives the older ones, and deletes steps older than N days — the blobs they
// leave unreferenced go with the next garbage collection.

export interface CheckpointRetention {
  keep_last: number;
  archive_older: boolean;
  delete_after_days: number;
}

export class CheckpointStore {
  private readonly filePut: ChangeType<FileEntry & { run: string; step: number; key: string; now: string; etag?: string | null }>;
  private readonly archivedSet: ChangeType<{ run: string; step: number }>;
  private readonly deleted: ChangeType<{ run: string; step: number }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly registry: ModelRegistry,
  ) {
    this.filePut = changes.define('checkpoints', 'put_file', (db, f) => {
      db.prepare('INSERT OR IGNORE INTO blobs (sha256, size, tier, key, created_at) VALUES (?, ?, ?, ?, ?)').run(f.sha256, f.size, 'hot', f.key, f.now);
      db.prepare('INSERT OR IGNORE INTO checkpoints (run, step, created_at) VALUES (?, ?, ?)').run(f.run, f.step, f.now);
      db.prepare(
        `INSERT INTO checkpoint_files (run, step, path, size, sha256, created_at, etag) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (run, step, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at, etag = excluded.etag`,
      ).run(f.run, f.step, f.path, f.size, f.sha256, f.now, f.etag ?? null);
    });
    this.archivedSet = changes.define('checkpoints', 'archive', (db, c) => {
      db.prepare('UPDATE checkpoints SET archived = 1 WHERE run = ? AND step = ?').run(c.run, c.step);
    });
    this.deleted = changes.define('checkpoints', 'delete', (db, c) => {
      db.prepare('DELETE FROM checkpoints WHERE run = ? AND step = ?').run(c.run, c.step);
    });
  }

  async putFile(actor: Actor, run: string, step: number, path: string, body: AsyncIterable<Uint8Array>, expectedSha256?: string, etag?: () => string | undefined): Promise<FileEntry> {
    checkFilePath(path);
    const blob = await this.registry.blobs.put(actor, body, expectedSha256, (tx, b) => this.recordFile(tx, run, step, path, b, etag?.()));
    return { path, size: blob.size, sha256: blob.sha256 };
  }

  /** Records a stored blob as a file of a step, in the caller's transaction (S3 multipart completes here). */
  recordFile(tx: Tx, run: string, step: number, path: string, b: StoredBlob, etag?: string): void {
    checkFilePath(path);
    tx.apply(this.filePut, { run, step, path, size: b.size, sha256: b.sha256, key: b.key, now: new Date().toISOString(), ...(etag ? { etag } : {}) });
    tx.audit('checkpoints.put_file', `run:${run}/${step}/${path}`, { size: b.size, sha256: b.sha256 });
  }

  locateFile(run: string, step: number, path: string): FileEntry & { key: string; tier: string; etag?: string | null; created_at?: string } {
    checkFilePath(path);
    const f = this.db
      .prepare<FileEntry & { key: string; tier: string; etag: string | null; created_at: string }>(
        'SELECT c.path, c.size, c.sha256, c.etag, c.created_at, b.key, b.tier FROM checkpoint_files c JOIN blobs b ON b.sha256 = c.sha256 WHERE c.run = ? AND c.step = ? AND c.path = ?',
      )
      .get(run, step, path);
    if (!f) throw new NotFound(`run ${run} has no checkpoint file ${step}/${path}`);
    return f;
  }

  list(run: string) {
    const rows = this.db
      .prepare<{ step: number; archived: number; created_at: string; files: number; bytes: number | null }>(
        `SELECT k.step, k.archived, k.created_at, count(c.path) AS files, sum(c.size) AS bytes
         FROM checkpoints k LEFT JOIN checkpoint_files c ON c.run = k.run AND c.step = k.step
         WHERE k.run = ? GROUP BY k.step ORDER BY k.step DESC`,
      )
      .all(run);
    if (rows.length === 0) throw new NotFound(`run ${run} has no checkpoints`);
    return { items: rows.map((r) => ({ step: r.step, files: r.files, bytes: r.bytes ?? 0, tier: r.archived ? 'archive' : 'hot', created_at: r.created_at })) };
  }

  /** Every file of the runs whose name starts with `runPrefix`, for S3 listings (sorted by run, step, path). */
  listFiles(runPrefix: string): Array<{ run: string; step: number; path: string; size: number; sha256: string; etag: string | null; created_at: string }> {
    return this.db
      .prepare<{ run: string; step: number; path: string; size: number; sha256: string; etag: string | null; created_at: string }>(
        "SELECT run, step, path, size, sha256, etag, created_at FROM checkpoint_files WHERE substr(run, 1, length(?)) = ? ORDER BY run, step, path",
      )
      .all(runPrefix, runPrefix);
  }

  /** Applies the retention policy to every run; returns what it did. */
  async applyRetention(actor: Actor, policy: CheckpointRetention, now = Date.now()): Promise<{ archived: number; deleted: number }> {
    const deleteBefore = new Date(now - policy.delete_after_days * 86_400_000).toISOString();
    let archived = 0;
    let deleted = 0;
    const runs = this.db.prepare<{ run: string }>('SELECT DISTINCT run FROM checkpoints').all();
    for (const { run } of runs) {
      const older = this.db
        .prepare<{ step: number; archived: number; created_at: string }>('SELECT step, archived, created_at FROM checkpoints WHERE run = ? ORDER BY step DESC LIMIT -1 OFFSET ?')
        .all(run, policy.keep_last);
      for (const c of older) {
        if (c.created_at < deleteBefore) {
          await this.writer.write(actor, (tx) => {
            tx.apply(this.deleted, { run, step: c.step });
            tx.audit('checkpoints.delete', `run:${run}/${c.step}`, { reason: 'retention' });
          });
          deleted++;
        } else if (policy.archive_older && !c.archived) {
          await this.writer.write(actor, (tx) => tx.apply(this.archivedSet, { run, step: c.step }));
          const shas = this.db
            .prepare<{ sha256: string }>('SELECT DISTINCT sha256 FROM checkpoint_files WHERE run = ? AND step = ?')
            .all(run, c.step)
            .map((r) => r.sha256);
          await this.registry.archive.archiveUnlessInUse(actor, shas);
          archived++;
        }
      }
    }
    return { archived, deleted };
  }
}
