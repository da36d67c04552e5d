import { rm } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { workerFile } from '../engines/worker-file.js';
import type { SqlStore } from '../engines/sql/sql-store.js';
import { divergentRecords, writeRollback } from './rollback.js';

// Snapshots of a SQL store, for bootstrapping replicas (and, later, backups).
//
// Taking one uses `VACUUM INTO`, which every SQLite driver Strata runs on supports (better-
// sqlite3's backup() restarts whenever another connection writes — see FIELD-NOTES): it copies
// the database as of one read transaction into a new, compact file, on a connection and a
// thread of its own so the daemon keeps answering. The LSN a snapshot includes is read from
// the copy itself, so it can never disagree with the copy's contents.
//
// Installing one replaces the rows of every table of an open store, in one transaction, from
// the attached snapshot. The schema must be identical (same Strata version on both nodes).
// Triggers are dropped and recreated around the copy, because the billing ledger's triggers
// refuse DELETE — for everyone else, which is the point of them.

/** A snapshot of `store` at `path`, taken on a worker thread with a connection of its own (snapshot-worker-thread.ts). */
export async function takeSnapshotOffThread(store: SqlStore, path: string): Promise<{ path: string; lsn: number }> {
  await rm(path, { force: true });
  const worker = new Worker(workerFile(import.meta.url, 'snapshot-worker-thread.js'), { workerData: { source: store.db.path, target: path } });
  try {
    const answer = await new Promise<{ lsn?: number; error?: string; code?: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the snapshot worker exited with ${code}`)));
    });
    if (answer.error !== undefined) throw Object.assign(new Error(`snapshot of ${store.db.path} failed: ${answer.error}`), { code: answer.code });
    return { path, lsn: answer.lsn! };
  } finally {
    await worker.terminate();
  }
}

export class SchemaMismatch extends Error {
  constructor(detail: string) {
    super(`the snapshot's schema differs from this node's (${detail}); run the same Strata version on both nodes`);
    this.name = 'SchemaMismatch';
  }
}

/**
 * meta rows that describe this node, not the data: a snapshot carries its source's, which must
 * not replace a replica's own (a copied role: primary would make the replica a primary at its
 * next start).
 */
export const NODE_META_KEYS = ['role', 'role_epoch', 'following', 'known_replicas'] as const;

/** Where and as whom to keep what an install discards (rollback.ts). */
export interface RollbackTarget {
  dir: string;
  store: string;
  nodeId: string;
}

export function installSnapshot(store: SqlStore, path: string, rollback?: RollbackTarget): { lsn: number; rolledBack?: { file: string; records: number } } {
  const { db } = store;
  let rolledBack: { file: string; records: number } | undefined;
  const marks = NODE_META_KEYS.map(() => '?').join(', ');
  const local = db.prepare<{ key: string; value: string }>(`SELECT key, value FROM meta WHERE key IN (${marks})`).all(...NODE_META_KEYS);
  db.prepare('ATTACH DATABASE ? AS snap').run(path);
  try {
    const schema = (where: string) =>
      db
        .prepare<{ type: string; name: string; sql: string | null }>(`SELECT type, name, sql FROM ${where}.sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name`)
        .all()
        .map((r) => `${r.type} ${r.name} ${r.sql ?? ''}`)
        .join('\n');
    if (schema('main') !== schema('snap')) throw new SchemaMismatch('tables, indexes or triggers differ');
    const tables = db.prepare<{ name: string }>("SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all();
    const triggers = db.prepare<{ name: string; sql: string }>("SELECT name, sql FROM main.sqlite_master WHERE type = 'trigger'").all();
    db.exec('BEGIN IMMEDIATE');
    try {
      // Before anything is replaced, and inside the transaction (no write can slip in between):
      // this node's records the snapshot's history lacks go to a rollback file, or, if that
      // file cannot be written, the install fails and nothing is discarded.
      const divergent = rollback ? divergentRecords(db) : [];
      if (rollback && divergent.length > 0) {
        rolledBack = { file: writeRollback(rollback.dir, { store: rollback.store, epoch: store.epoch(), node_id: rollback.nodeId, records: divergent }), records: divergent.length };
      }
      db.exec('PRAGMA defer_foreign_keys = ON');
      for (const t of triggers) db.exec(`DROP TRIGGER main."${t.name}"`);
      for (const { name } of tables) {
        db.exec(`DELETE FROM main."${name}"`);
        db.exec(`INSERT INTO main."${name}" SELECT * FROM snap."${name}"`);
      }
      db.exec('DELETE FROM main.sqlite_sequence');
      db.exec('INSERT INTO main.sqlite_sequence SELECT * FROM snap.sqlite_sequence');
      db.prepare(`DELETE FROM main.meta WHERE key IN (${marks})`).run(...NODE_META_KEYS);
      const keep = db.prepare('INSERT INTO main.meta (key, value) VALUES (?, ?)');
      for (const row of local) keep.run(row.key, row.value);
      for (const t of triggers) db.exec(t.sql);
      db.exec('COMMIT');
    } catch (err) {
      db.exec('ROLLBACK');
      throw err;
    }
  } finally {
    db.exec('DETACH DATABASE snap');
  }
  store.changes.reload();
  store.writer.resync();
  return { lsn: store.changes.lastLsn(), ...(rolledBack ? { rolledBack } : {}) };
}
