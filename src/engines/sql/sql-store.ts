import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ChangeLog, changeLogMigrations } from './change-log.js';
import { openDatabase, type SqlDatabase } from './database.js';
import { applyMigrations, type Migration } from './migrations.js';
import { Writer, type WriterOptions } from './writer.js';

/**
 * One SQLite file with its change log and its writer. Engines receive this and define
 * their change types on `changes`; they read through `db` and write only through `writer`.
 */
export class SqlStore {
  private constructor(
    readonly db: SqlDatabase,
    readonly changes: ChangeLog,
    readonly writer: Writer,
  ) {}

  static async open(path: string, migrations: readonly Migration[], options: WriterOptions = {}): Promise<SqlStore> {
    mkdirSync(dirname(path), { recursive: true });
    const db = await openDatabase(path);
    try {
      applyMigrations(db, [...changeLogMigrations, ...migrations]);
    } catch (err) {
      db.close();
      throw err;
    }
    const changes = new ChangeLog(db);
    return new SqlStore(db, changes, new Writer(db, changes, options));
  }

  meta(key: string): string | undefined {
    return this.db.prepare<{ value: string }>('SELECT value FROM meta WHERE key = ?').get(key)?.value;
  }

  epoch(): number {
    return Number(this.meta('epoch') ?? 1);
  }

  /** Finishes queued writes, checkpoints the WAL into the main file and closes it. */
  async close(): Promise<void> {
    await this.writer.close();
    try {
      this.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    } catch {
      // A full disk refuses the checkpoint. Nothing is lost: the WAL holds every commit and
      // the next open checkpoints it; the file must still be closed.
    } finally {
      this.db.close();
    }
  }
}
