import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pack, unpack } from 'msgpackr';
import type { SqlDatabase } from '../engines/sql/database.js';

// Rollback files: what a node wrote alone, kept when its state is replaced by a newer
// primary's. A former primary that rejoins (fenced, or found ahead of its primary) bootstraps
// from a snapshot, and every change record of its own that the snapshot's history does not
// hold would otherwise vanish — acknowledged writes of an asynchronous store, lost silently.
// They go to <data_dir>/rollback/<store>-<epoch>-<first>-<last>.msgpack first (MongoDB's
// practice), written and fsynced before the snapshot replaces anything; if the file cannot
// be written, the bootstrap fails and is retried, so nothing is discarded unrecorded.
//
// Who writes: only installSnapshot (replica-client.ts), inside the install's transaction.
// `epoch` in the name is the epoch of the primary whose snapshot replaced the records.

export const ROLLBACK_FORMAT = 'strata-rollback-1';

export interface RollbackRecord {
  lsn: number;
  time: number;
  engine: string;
  op: string;
  /** The record's MessagePack payload, byte for byte as it was logged. */
  payload: Uint8Array;
}

export interface RollbackContents {
  format: typeof ROLLBACK_FORMAT;
  store: string;
  epoch: number;
  node_id: string;
  discarded_at: string;
  records: RollbackRecord[];
}

export interface RollbackSummary {
  file: string;
  store: string;
  epoch: number;
  first_lsn: number;
  last_lsn: number;
  records: number;
  bytes: number;
  created_at: string;
}

const NAME = /^([a-z]+)-(\d+)-(\d+)-(\d+)(?:\.\d+)?\.msgpack$/;

/**
 * This node's change records that the attached snapshot (`snap`) does not hold: those past the
 * snapshot's last LSN, and those the snapshot's log has under the same LSN with other contents.
 * Records older than the snapshot's oldest logged one cannot be compared (its log was pruned
 * there) and are taken as shared history.
 */
export function divergentRecords(db: SqlDatabase): RollbackRecord[] {
  const snapLast = db.prepare<{ seq: number }>("SELECT seq FROM snap.sqlite_sequence WHERE name = 'changelog'").get()?.seq ?? 0;
  const snapOldest = db.prepare<{ lsn: number | null }>('SELECT min(lsn) AS lsn FROM snap.changelog').get()?.lsn ?? snapLast + 1;
  return db
    .prepare<RollbackRecord>(
      `SELECT m.lsn, m.time, m.engine, m.op, m.payload FROM main.changelog m
         LEFT JOIN snap.changelog s ON s.lsn = m.lsn
        WHERE m.lsn >= ? AND (s.lsn IS NULL OR s.time != m.time OR s.engine != m.engine OR s.op != m.op OR s.payload != m.payload)
        ORDER BY m.lsn`,
    )
    .all(snapOldest)
    .map((r: RollbackRecord) => ({ ...r, payload: new Uint8Array(r.payload) }));
}

/** Writes the records durably (temp file, fsync, rename, fsync of the directory); returns the path. */
export function writeRollback(dir: string, contents: Omit<RollbackContents, 'format' | 'discarded_at'>): string {
  mkdirSync(dir, { recursive: true });
  const { records } = contents;
  const base = `${contents.store}-${contents.epoch}-${records[0]!.lsn}-${records[records.length - 1]!.lsn}`;
  let name = `${base}.msgpack`;
  for (let i = 1; existsIn(dir, name); i++) name = `${base}.${i}.msgpack`;
  const bytes = pack({ format: ROLLBACK_FORMAT, ...contents, discarded_at: new Date().toISOString() } satisfies RollbackContents);
  const temp = join(dir, `.${name}.tmp`);
  const fd = openSync(temp, 'w', 0o600);
  try {
    writeSync(fd, bytes);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, join(dir, name));
  const dirFd = openSync(dir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
  return join(dir, name);
}

function existsIn(dir: string, name: string): boolean {
  try {
    statSync(join(dir, name));
    return true;
  } catch {
    return false;
  }
}

export function readRollback(path: string): RollbackContents {
  const contents = unpack(readFileSync(path)) as RollbackContents;
  if (contents?.format !== ROLLBACK_FORMAT || !Array.isArray(contents.records)) throw new Error(`${path} is not a Strata rollback file`);
  return contents;
}

/** The rollback files in `dir`, oldest first (each read once, for its record count). */
export function listRollbacks(dir: string): RollbackSummary[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: RollbackSummary[] = [];
  for (const file of names) {
    const m = NAME.exec(file);
    if (!m) continue;
    const path = join(dir, file);
    const st = statSync(path);
    out.push({ file, store: m[1]!, epoch: Number(m[2]), first_lsn: Number(m[3]), last_lsn: Number(m[4]), records: readRollback(path).records.length, bytes: st.size, created_at: st.mtime.toISOString() });
  }
  return out.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.file.localeCompare(b.file));
}
