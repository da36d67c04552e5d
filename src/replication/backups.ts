import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SqlStore } from '../engines/sql/sql-store.js';
import type { ChangeRecord } from '../engines/sql/change-log.js';
import { BackupArchive, readAll, type SnapshotManifest } from './backup-archive.js';
import { takeSnapshotOffThread } from './snapshot.js';

// Continuous backup of a primary: change-log segments shipped every few seconds (the RPO)
// and snapshots on a schedule (how much log a restore has to replay). Retention keeps, for
// each store, every snapshot inside the window plus the newest one before it — a restore to
// the window's first second needs that one — and the segments after it; nothing while a
// restore holds a lock in the archive.
//
// Who may write here: only a primary (replicas get their log from it); the shipped position
// is node state in each store's meta table, so a promoted replica continues from where the
// snapshot it was bootstrapped from says the old primary stood.

export interface BackupOptions {
  segmentSeconds: number;
  snapshotSeconds: number;
  retentionDays: number;
  /** Where temporary snapshot files are written (inside the data dir: same disk, same permissions). */
  scratchDir: string;
}

export interface BackupEvents {
  snapshot?(m: SnapshotManifest): void;
  segmentLag?(seconds: number): void;
  verified?(at: number): void;
  /** The last successful `strata drill`: when it ended, and how long it took. */
  drilled?(at: number, seconds: number): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

export class Backups {
  private segmentTimer: NodeJS.Timeout | undefined;
  private snapshotTimer: NodeJS.Timeout | undefined;
  private shipping = false;
  private verifyTimer: NodeJS.Timeout | undefined;
  private snapshotting: Promise<SnapshotManifest[]> | undefined;
  private queued: Promise<SnapshotManifest[]> | undefined;

  constructor(
    readonly archive: BackupArchive,
    private readonly stores: Record<string, SqlStore>,
    private readonly isPrimary: () => boolean,
    private readonly options: BackupOptions,
    private readonly events: BackupEvents,
    /**
     * Saves derived index files and names them, just before the main store's snapshot: their
     * LSN is then at most the snapshot's, so a restore replays the rest onto them.
     */
    private readonly indexFiles: () => Promise<Array<{ name: string; path: string }>> = async () => [],
  ) {}

  start(): void {
    this.segmentTimer = setInterval(() => void this.shipSegments().catch((err: unknown) => this.events.log('error', 'shipping change-log segments failed; retrying', { err: String(err) })), this.options.segmentSeconds * 1000);
    this.segmentTimer.unref();
    this.snapshotTimer = setInterval(() => void this.snapshotNow().catch(() => undefined), this.options.snapshotSeconds * 1000);
    this.snapshotTimer.unref();
    const readVerify = () =>
      void this.archive.objects
        .get('status/verify.json')
        .then(readAll)
        .then((b) => this.events.verified?.((JSON.parse(b.toString('utf8')) as { at: number }).at))
        .catch(() => undefined);
    // The last DR drill (strata drill) leaves its status beside verify's.
    const readDrill = () =>
      void this.archive.objects
        .get('status/drill.json')
        .then(readAll)
        .then((b) => {
          const d = JSON.parse(b.toString('utf8')) as { at: number; duration_seconds: number };
          this.events.drilled?.(d.at, d.duration_seconds);
        })
        .catch(() => undefined);
    this.verifyTimer = setInterval(() => {
      readVerify();
      readDrill();
    }, 60_000);
    this.verifyTimer.unref();
    readVerify();
    readDrill();
    // A node without any snapshot takes one at once: until then nothing is restorable.
    void (async () => {
      if ((await this.archive.snapshots('main')).length === 0) await this.snapshotNow();
    })().catch((err: unknown) => this.events.log('error', 'the first backup snapshot failed; the next interval retries', { err: String(err) }));
  }

  async stop(): Promise<void> {
    clearInterval(this.segmentTimer);
    clearInterval(this.snapshotTimer);
    clearInterval(this.verifyTimer);
    await this.snapshotting?.catch(() => undefined);
    // Ship what is committed, so a clean shutdown leaves nothing unshipped.
    await this.shipSegments().catch(() => undefined);
  }

  /** The highest LSN of a store that is safely in the archive. */
  shippedLsn(store: string): number {
    return Number(this.stores[store]!.meta(`backup_shipped_lsn`) ?? 0);
  }

  async shipSegments(): Promise<void> {
    if (this.shipping || !this.isPrimary()) return;
    this.shipping = true;
    try {
      let lag = 0;
      for (const [name, store] of Object.entries(this.stores)) {
        for (;;) {
          const shipped = this.shippedLsn(name);
          const records = store.changes.readAfter(shipped, 5000);
          if (records.length === 0) break;
          if (records[0]!.lsn !== shipped + 1) {
            // Pruned before it was shipped: only a new snapshot can bridge the gap.
            this.events.log('warn', 'change log pruned past the shipped position; taking a snapshot to bridge it', { store: name, shipped, next: records[0]!.lsn });
            await this.snapshotNow();
            this.setShipped(store, records[0]!.lsn - 1);
            continue;
          }
          await this.archive.putSegment(name, await this.withoutUserKeys(records));
          this.setShipped(store, records[records.length - 1]!.lsn);
        }
        const oldest = store.changes.readAfter(this.shippedLsn(name), 1)[0];
        if (oldest) lag = Math.max(lag, (Date.now() - oldest.time) / 1000);
        await this.archive.writeStatus(name, { lsn: this.shippedLsn(name), checked_at: Date.now() });
      }
      this.events.segmentLag?.(lag);
    } finally {
      this.shipping = false;
    }
  }

  /**
   * User keys never enter a segment: each is stored under keys/users/ (before the segment that
   * needs it) and the record keeps only the user id; a destroyed key is deleted there.
   */
  private async withoutUserKeys(records: ChangeRecord[]): Promise<ChangeRecord[]> {
    const out: ChangeRecord[] = [];
    for (const r of records) {
      if (r.engine === 'crypto' && r.op === 'create_user_key') {
        const p = r.payload as { user_id: string; wrapped?: Uint8Array; created_at: string };
        if (p.wrapped) await this.archive.putUserKey(p.user_id, Buffer.from(p.wrapped));
        out.push({ ...r, payload: { user_id: p.user_id, created_at: p.created_at } });
        continue;
      }
      if (r.engine === 'crypto' && r.op === 'destroy_user_key') await this.archive.deleteUserKey((r.payload as { user_id: string }).user_id);
      out.push(r);
    }
    return out;
  }

  /** The snapshot copy loses its user keys (zeroed, not just unlinked); the key prefix gets every live one. */
  private async moveUserKeysOut(store: SqlStore, copy: string): Promise<void> {
    const keys = store.db.prepare<{ user_id: string; wrapped: Uint8Array }>('SELECT user_id, wrapped FROM user_keys').all();
    const stored = await this.archive.userKeyIds();
    for (const k of keys) if (!stored.has(k.user_id)) await this.archive.putUserKey(k.user_id, Buffer.from(k.wrapped));
    const live = new Set(keys.map((k) => k.user_id));
    for (const userId of stored) if (!live.has(userId)) await this.archive.deleteUserKey(userId);
    store.db.prepare('ATTACH DATABASE ? AS copy').run(copy);
    try {
      store.db.exec('PRAGMA copy.secure_delete = ON; DELETE FROM copy.user_keys;');
    } finally {
      store.db.exec('DETACH DATABASE copy');
    }
  }

  /** Snapshots every store now (one at a time), then applies retention. */
  snapshotNow(): Promise<SnapshotManifest[]> {
    // One that is already running began before this call and may miss its writes: queue one
    // more after it (and share that one among everyone who asks meanwhile).
    if (this.snapshotting) {
      this.queued ??= this.snapshotting
        .catch(() => undefined)
        .then(() => {
          this.queued = undefined;
          return this.snapshotNow();
        });
      return this.queued;
    }
    if (!this.isPrimary()) return Promise.resolve([]);
    this.snapshotting = (async () => {
      const dir = await mkdtemp(join(this.options.scratchDir, '.backup-'));
      try {
        const out: SnapshotManifest[] = [];
        for (const [name, store] of Object.entries(this.stores)) {
          const indexes = name === 'main' ? await this.indexFiles() : [];
          const snap = await takeSnapshotOffThread(store, join(dir, `${name}.db`));
          if (name === 'main') await this.moveUserKeysOut(store, snap.path);
          const time = store.changes.timeOf(snap.lsn) ?? Date.now();
          const m = await this.archive.putSnapshot(name, snap.path, { lsn: snap.lsn, time }, indexes);
          out.push(m);
          this.events.log('info', 'backup snapshot written', { store: name, lsn: m.lsn, bytes: m.bytes });
        }
        for (const m of out) this.events.snapshot?.(m);
        await this.applyRetention();
        return out;
      } catch (err) {
        this.events.log('error', 'backup snapshot failed', { err: String(err) });
        throw err;
      } finally {
        await rm(dir, { recursive: true, force: true });
        this.snapshotting = undefined;
      }
    })();
    return this.snapshotting;
  }

  /** Snapshots and the restorable window per store: from the oldest snapshot to the last shipped commit. */
  async list() {
    const out: Record<string, unknown> = {};
    let from: number | undefined;
    let to: number | undefined;
    for (const name of Object.keys(this.stores)) {
      const snaps = await this.archive.snapshots(name);
      out[name] = snaps.map(({ dir: _dir, ...m }) => ({ ...m, time: new Date(m.time).toISOString() }));
      const status = await this.archive.readStatus(name);
      if (snaps[0]) from = Math.max(from ?? 0, snaps[0].time);
      if (status) to = Math.min(to ?? Infinity, status.checked_at);
    }
    return { snapshots: out, window: from !== undefined && to !== undefined && to >= from ? { from: new Date(from).toISOString(), to: new Date(to).toISOString() } : null };
  }

  async applyRetention(now = Date.now()): Promise<{ snapshots: number; segments: number }> {
    // A restore in progress pins everything.
    for await (const lock of this.archive.objects.list('locks/')) {
      if (lock.modified && now - lock.modified.getTime() < 86_400_000) return { snapshots: 0, segments: 0 };
    }
    const start = now - this.options.retentionDays * 86_400_000;
    let snapshots = 0;
    let segments = 0;
    for (const name of Object.keys(this.stores)) {
      const snaps = await this.archive.snapshots(name);
      const before = snaps.filter((s) => s.time < start);
      const keepFrom = before[before.length - 1] ?? snaps[0];
      if (!keepFrom) continue;
      for (const s of snaps) if (s.lsn < keepFrom.lsn) {
        await this.archive.deleteSnapshot(s.dir);
        snapshots++;
      }
      for (const seg of await this.archive.segments(name)) if (seg.last <= keepFrom.lsn) {
        await this.archive.objects.delete(seg.key);
        segments++;
      }
      // Parts of a snapshot whose writer died before its manifest (kill -9 mid-snapshot) are
      // nobody's: no restore lists them. Gone once surely not in progress any more.
      const complete = new Set(snaps.map((s) => s.dir));
      for await (const o of this.archive.objects.list(`snapshots/${name}/`)) {
        const dir = o.key.split('/').slice(0, 3).join('/');
        if (!complete.has(dir) && o.modified && now - o.modified.getTime() > 3_600_000) await this.archive.objects.delete(o.key);
      }
    }
    // And temp files of puts a crash interrupted, likewise.
    await this.archive.objects.sweepIncomplete?.(3_600_000);
    return { snapshots, segments };
  }

  private setShipped(store: SqlStore, lsn: number): void {
    store.db.prepare("INSERT INTO meta (key, value) VALUES ('backup_shipped_lsn', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(String(lsn));
  }
}
