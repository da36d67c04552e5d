import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { SqlStore } from '../engines/sql/sql-store.js';
import type { Migration } from '../engines/sql/migrations.js';
import { BackupArchive, BackupCorrupt, bufferSource, type SegmentInfo } from './backup-archive.js';
import { applyChanges } from './change-feed.js';

// Point-in-time restore: for each store, the newest snapshot at or before the target time,
// then the shipped segments after it, record by record, up to the last commit at or before
// that time. Commit times never go backwards along LSNs (the change log guarantees it), so
// "up to time T" is "up to the last record whose time is ≤ T". Anything that would make the
// result something other than what was asked is an error, never a quiet substitute: a time
// before the oldest snapshot, a time past what was shipped, a gap between segments, a
// segment that fails its checksum.

export class RestoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RestoreError';
  }
}

export interface StoreSpec {
  name: string;
  file: string;
  migrations: readonly Migration[];
  /** Defines the store's change types so its log can be replayed. */
  define(store: SqlStore): void;
}

export interface RestoreResult {
  store: string;
  snapshot_lsn: number;
  lsn: number;
  records: number;
  /** Commit time (ms) of the last record applied. */
  time: number;
  bytes: number;
  /** Seconds spent copying and checking the snapshot (with index files), and replaying segments. */
  snapshot_seconds: number;
  replay_seconds: number;
}

/**
 * Present in a data dir while a restore writes it; removed only when every store is complete.
 * The daemon refuses to serve a data dir that holds it: a restore killed half-way leaves a
 * database replayed to some arbitrary point, which must be restored again, never served.
 */
export const RESTORE_MARKER = 'RESTORE-IN-PROGRESS';

export interface RestoreOptions {
  to: number | 'latest';
  targetDir: string;
  progress?: (line: string) => void;
  /**
   * Written into the main store's meta before any record is replayed, so that even a
   * half-done copy never carries its source's identity (see tier-owner.ts). Unset: keep it.
   */
  clusterId?: string | undefined;
  /** Keep the source's list of its replicas (a node brought back), or drop it (a copy). */
  keepReplicas?: boolean;
}

export async function restore(archive: BackupArchive, stores: StoreSpec[], options: RestoreOptions): Promise<RestoreResult[]> {
  mkdirSync(options.targetDir, { recursive: true });
  if (readdirSync(options.targetDir).some((f) => f.endsWith('.db'))) throw new RestoreError(`${options.targetDir} already holds a database; restore into an empty directory`);
  writeFileSync(join(options.targetDir, RESTORE_MARKER), `strata restore to ${options.to === 'latest' ? 'latest' : new Date(options.to).toISOString()}, started ${new Date().toISOString()} (pid ${process.pid})\n`);
  const lock = `locks/restore-${process.pid}-${Date.now()}.json`;
  await archive.objects.put(lock, bufferSource(Buffer.from(JSON.stringify({ target: options.targetDir, at: new Date().toISOString() }))));
  try {
    const results: RestoreResult[] = [];
    for (const spec of stores) results.push(await restoreStore(archive, spec, options));
    rmSync(join(options.targetDir, RESTORE_MARKER));
    return results;
  } finally {
    await archive.objects.delete(lock);
  }
}

async function restoreStore(archive: BackupArchive, spec: StoreSpec, options: RestoreOptions): Promise<RestoreResult> {
  const say = options.progress ?? (() => undefined);
  const snaps = await archive.snapshots(spec.name);
  if (snaps.length === 0) throw new RestoreError(`no snapshot of ${spec.name} in the backup target`);
  const status = await archive.readStatus(spec.name);
  let to = options.to;
  if (to === 'latest') to = Math.max(status?.checked_at ?? 0, snaps[snaps.length - 1]!.time);
  if (to < snaps[0]!.time) {
    throw new RestoreError(`${new Date(to).toISOString()} is before the oldest snapshot of ${spec.name} (${new Date(snaps[0]!.time).toISOString()}); the restorable window starts there`);
  }
  if (options.to !== 'latest' && status && to > status.checked_at) {
    throw new RestoreError(`${new Date(to).toISOString()} is after the last shipped commit check of ${spec.name} (${new Date(status.checked_at).toISOString()}); choose an earlier time or --to latest`);
  }
  const snap = [...snaps].reverse().find((s) => s.time <= to)!;
  const file = join(options.targetDir, spec.file);
  say(`${spec.name}: snapshot at LSN ${snap.lsn} (${new Date(snap.time).toISOString()}), ${snap.bytes} bytes`);
  const started = performance.now();
  const hash = createHash('sha256');
  const source = await archive.objects.get(`${snap.dir}/db.sqlite`);
  source.on('data', (c: Buffer) => hash.update(c));
  await pipeline(source, createWriteStream(file));
  if (hash.digest('hex') !== snap.sha256) throw new BackupCorrupt(`snapshot ${snap.dir} does not match its manifest's SHA-256`);

  // Index files saved with the snapshot include at most its LSN; the daemon replays the rest.
  for (const name of snap.indexes ?? []) {
    mkdirSync(join(options.targetDir, 'indexes'), { recursive: true });
    await pipeline(await archive.objects.get(`${snap.dir}/indexes/${name}`), createWriteStream(join(options.targetDir, 'indexes', name)));
  }
  const copied = performance.now();
  const store = await SqlStore.open(file, spec.migrations);
  try {
    // A half-done restore directory is thrown away, never served, so the segments need no
    // fsync each: only the final checkpoint below must be durable (it runs with FULL again).
    store.db.exec('PRAGMA synchronous = OFF');
    // The copy's node state: its role comes from its config, its identity from the caller.
    store.db.prepare(`DELETE FROM meta WHERE key IN ('role', 'role_epoch', 'following'${options.keepReplicas ? '' : ", 'known_replicas'"})`).run();
    if (options.clusterId && spec.name === 'main') store.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('cluster_id', ?)").run(options.clusterId);
    spec.define(store);
    let lsn = store.changes.lastLsn();
    if (lsn !== snap.lsn) throw new BackupCorrupt(`snapshot ${snap.dir} holds LSN ${lsn}, its manifest says ${snap.lsn}`);
    let time = snap.time;
    let records = 0;
    const segments = (await archive.segments(spec.name)).filter((s) => s.last > snap.lsn);
    let done = false;
    for (let i = 0; i < segments.length && !done; ) {
      // The next segment must start right after what is applied; equal copies of one range
      // are harmless, overlapping ones with other contents are not.
      const candidates = segments.filter((s) => s.first <= lsn + 1 && s.last > lsn);
      if (candidates.length === 0) break;
      const seg = pickOne(candidates, lsn);
      i = segments.indexOf(seg) + 1;
      const batch = (await archive.readSegment(seg)).filter((r) => r.lsn > lsn);
      const upTo = batch.findIndex((r) => r.time > (to as number));
      const apply = upTo === -1 ? batch : batch.slice(0, upTo);
      if (apply.length) {
        lsn = applyChanges(store, apply);
        time = apply[apply.length - 1]!.time;
        records += apply.length;
      }
      say(`${spec.name}: segment ${seg.first}-${seg.last} applied up to LSN ${lsn}`);
      if (upTo !== -1) done = true;
    }
    if (!done) {
      const shipped = (await archive.readStatus(spec.name))?.lsn ?? lsn;
      if (lsn < shipped) throw new RestoreError(`segments of ${spec.name} stop at LSN ${lsn} but ${shipped} was shipped: a gap in the backup`);
    }
    if (store.db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'user_keys'").get()) {
      // Keys are not history: only those that still exist come back (erased users stay unreadable).
      const insert = store.db.prepare('INSERT OR REPLACE INTO user_keys (user_id, wrapped, created_at) SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM users WHERE id = ?)');
      const now = new Date().toISOString();
      for (const [userId, wrapped] of await archive.userKeys()) insert.run(userId, wrapped, now, userId);
    }
    store.db.exec('PRAGMA synchronous = FULL');
    store.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    const round = (ms: number) => Math.round(ms) / 1000;
    return { store: spec.name, snapshot_lsn: snap.lsn, lsn, records, time, bytes: snap.bytes, snapshot_seconds: round(copied - started), replay_seconds: round(performance.now() - copied) };
  } finally {
    await store.close();
  }
}

function pickOne(candidates: SegmentInfo[], lsn: number): SegmentInfo {
  const starting = candidates.filter((s) => s.first === lsn + 1);
  const best = (starting.length ? starting : candidates).sort((a, b) => b.last - a.last);
  const conflicting = best.filter((s) => s.first === best[0]!.first && s.last === best[0]!.last && s.sha256 !== best[0]!.sha256);
  if (conflicting.length) throw new BackupCorrupt(`two different segments claim LSNs ${best[0]!.first}-${best[0]!.last}: ${best[0]!.key} and ${conflicting[0]!.key}`);
  return best[0]!;
}


