import { Packr } from 'msgpackr';
import type { SqlDatabase } from './database.js';
import type { Migration } from './migrations.js';

// The change log is the spine of Strata: every mutation appends one record here in the same
// SQLite transaction as the mutation itself. Replication ships these records, point-in-time
// recovery replays them, and derived state (vector indexes, caches) is rebuilt from them.
//
// A mutation is expressed as a *change type*: a name plus an applier that turns the logged
// payload into rows. The primary logs the payload and runs the applier; a replica or a
// restore runs the very same applier on the logged payload. So there is one write path, and a
// record in the log is always enough to reproduce its effect.

export const changeLogMigrations: Migration[] = [
  {
    engine: 'core',
    version: 1,
    name: 'change log and node metadata',
    sql: `
      -- AUTOINCREMENT: an LSN is never reused, even after old records are pruned.
      CREATE TABLE changelog (
        lsn INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,         -- unix milliseconds, never decreasing along lsn
        engine TEXT NOT NULL,
        op TEXT NOT NULL,
        payload BLOB NOT NULL          -- MessagePack
      );
      CREATE INDEX changelog_time ON changelog (time);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
      INSERT INTO meta (key, value) VALUES ('epoch', '1');
    `,
  },
];

export interface ChangeRecord<P = unknown> {
  lsn: number;
  time: number;
  engine: string;
  op: string;
  payload: P;
}

export type Applier<P> = (db: SqlDatabase, payload: P) => void;

export interface ChangeType<P> {
  readonly engine: string;
  readonly op: string;
  /** False only for the audit log's own records, which must not audit themselves. */
  readonly audited: boolean;
  readonly apply: Applier<P>;
}

// Plain MessagePack (no msgpackr record extension) so that other tools can read the frames.
const packr = new Packr({ useRecords: false, variableMapSize: true });

export class ChangeLog {
  private readonly types = new Map<string, ChangeType<unknown>>();
  private lastTime: number;

  constructor(private readonly db: SqlDatabase) {
    const last = db.prepare<{ time: number }>('SELECT time FROM changelog ORDER BY lsn DESC LIMIT 1').get();
    this.lastTime = last?.time ?? 0;
  }

  /** Re-reads the last commit time after the table was replaced underneath (a bootstrap). */
  reload(): void {
    this.lastTime = this.db.prepare<{ time: number }>('SELECT time FROM changelog ORDER BY lsn DESC LIMIT 1').get()?.time ?? 0;
  }

  /** The lowest LSN still held (0 when the log is empty): older positions need a snapshot. */
  oldestLsn(): number {
    return this.db.prepare<{ lsn: number | null }>('SELECT MIN(lsn) AS lsn FROM changelog').get()?.lsn ?? 0;
  }

  /** Commit time of a record (undefined when pruned or not yet written). */
  timeOf(lsn: number): number | undefined {
    return this.db.prepare<{ time: number }>('SELECT time FROM changelog WHERE lsn = ?').get(lsn)?.time;
  }

  /** Drops records at or below `lsn` older than `beforeTime`; replicas behind that must bootstrap. */
  prune(upToLsn: number, beforeTime: number): number {
    return Number(this.db.prepare('DELETE FROM changelog WHERE lsn <= ? AND time < ?').run(upToLsn, beforeTime).changes);
  }

  define<P>(engine: string, op: string, apply: Applier<P>, options: { audited?: boolean } = {}): ChangeType<P> {
    const key = `${engine}.${op}`;
    if (this.types.has(key)) throw new Error(`change type ${key} is defined twice`);
    const type: ChangeType<P> = { engine, op, apply, audited: options.audited ?? true };
    this.types.set(key, type as ChangeType<unknown>);
    return type;
  }

  /** Appends a record and applies it. Only the Writer calls this, inside its transaction. */
  append<P>(type: ChangeType<P>, payload: P): number {
    // Wall clocks step backwards (NTP); the time→LSN map used by point-in-time restore must not.
    const time = Math.max(Date.now(), this.lastTime);
    type.apply(this.db, payload);
    const result = this.db
      .prepare('INSERT INTO changelog (time, engine, op, payload) VALUES (?, ?, ?, ?)')
      .run(time, type.engine, type.op, packr.pack(payload));
    this.lastTime = time;
    return Number(result.lastInsertRowid);
  }

  /**
   * Applies a record that was logged elsewhere (a primary, a backup segment) under its own
   * LSN and time. The caller holds the transaction and applies records in LSN order.
   */
  replay(record: ChangeRecord): void {
    const type = this.types.get(`${record.engine}.${record.op}`);
    if (!type) throw new Error(`change log record ${record.lsn} has unknown type ${record.engine}.${record.op}`);
    type.apply(this.db, record.payload);
    this.db
      .prepare('INSERT INTO changelog (lsn, time, engine, op, payload) VALUES (?, ?, ?, ?, ?)')
      .run(record.lsn, record.time, record.engine, record.op, packr.pack(record.payload));
    this.lastTime = Math.max(this.lastTime, record.time);
  }

  /** Records with lsn > afterLsn, oldest first. */
  readAfter(afterLsn: number, limit = 1000): ChangeRecord[] {
    return this.db
      .prepare<{ lsn: number; time: number; engine: string; op: string; payload: Uint8Array }>(
        'SELECT lsn, time, engine, op, payload FROM changelog WHERE lsn > ? ORDER BY lsn LIMIT ?',
      )
      .all(afterLsn, limit)
      .map((r) => ({ ...r, payload: packr.unpack(r.payload) }));
  }

  /**
   * Rewrites the payloads of logged records in place (inside the caller's transaction): the
   * one sanctioned edit of history, for destroying secrets — an erased user's key must not
   * survive in the log. `rewrite` returns the new payload, or undefined to leave a record be.
   */
  rewrite(engine: string, op: string, rewrite: (payload: unknown) => unknown): number {
    const rows = this.db.prepare<{ lsn: number; payload: Uint8Array }>('SELECT lsn, payload FROM changelog WHERE engine = ? AND op = ?').all(engine, op);
    const update = this.db.prepare('UPDATE changelog SET payload = ? WHERE lsn = ?');
    let changed = 0;
    for (const r of rows) {
      const next = rewrite(packr.unpack(r.payload));
      if (next === undefined) continue;
      update.run(packr.pack(next), r.lsn);
      changed++;
    }
    return changed;
  }

  /** One engine's records with lsn > afterLsn, oldest first (replaying a derived index). */
  readEngineAfter(engine: string, afterLsn: number, limit = 1000): ChangeRecord[] {
    return this.db
      .prepare<{ lsn: number; time: number; engine: string; op: string; payload: Uint8Array }>(
        'SELECT lsn, time, engine, op, payload FROM changelog WHERE lsn > ? AND engine = ? ORDER BY lsn LIMIT ?',
      )
      .all(afterLsn, engine, limit)
      .map((r) => ({ ...r, payload: packr.unpack(r.payload) }));
  }

  /** The highest LSN ever committed, even if pruning has since removed that record. */
  lastLsn(): number {
    const row = this.db.prepare<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'").get();
    return row?.seq ?? 0;
  }
}
