import { InsufficientStorage, isOutOfSpace, ReadOnlyReplica, Unavailable } from '../errors.js';
import type { ChangeLog, ChangeType } from './change-log.js';
import type { SqlDatabase } from './database.js';

// The single write path. Every mutation in Strata is a synchronous function run by write():
// it reads what it needs, then logs its changes through tx.apply(). Calls that arrive while
// a commit is in progress (better-sqlite3 blocks the event loop during the fsync) queue up
// and run together in the next transaction: group commit. Each call runs in its own
// SAVEPOINT, so one call that throws rolls back only its own changes, and every call is
// acknowledged only after the COMMIT that contains it has returned — with synchronous=FULL
// that means after the WAL is on disk.

/** Who caused a change: a token id, or `system` / `cli` for the daemon's own work. */
export interface Actor {
  tokenId: string;
}

export interface AuditEntryInput {
  action: string;
  target: string;
  detail?: Record<string, unknown> | undefined;
}

export interface Tx {
  readonly db: SqlDatabase;
  readonly actor: Actor;
  /** Logs a change and applies it; returns its LSN. */
  apply<P>(type: ChangeType<P>, payload: P): number;
  /** Records what this call did in the audit log, in place of the automatic entry. */
  audit(action: string, target: string, detail?: Record<string, unknown>): void;
  /**
   * Scratch space shared by the calls of one transaction and dropped when it ends, committed or
   * not: what one call derived that the next may reuse (the conversation tail after an append).
   * A call that fails may have written here, so an entry must be checked against SQLite before use.
   */
  readonly batch: Map<unknown, unknown>;
}

/** Appends audit entries for one call; supplied by the audit engine. */
export type Auditor = (tx: Tx, entries: AuditEntryInput[]) => void;

export interface CommitInfo {
  seconds: number;
  calls: number;
  lastLsn: number;
}

export interface WriterOptions {
  /** Upper bound on calls per transaction, so one commit never holds the loop too long. */
  maxBatch?: number;
  onCommit?: (info: CommitInfo) => void;
}

interface Job {
  actor: Actor;
  fn: (tx: Tx) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export class Writer {
  private queue: Job[] = [];
  private scheduled = false;
  private closed = false;
  private idle: Promise<void> = Promise.resolve();
  private markIdle: (() => void) | null = null;
  private lsn: number;
  private auditor: Auditor | null = null;

  constructor(
    private readonly db: SqlDatabase,
    private readonly log: ChangeLog,
    private readonly options: WriterOptions = {},
  ) {
    this.lsn = log.lastLsn();
  }

  /** The LSN of the last committed change. */
  get lastLsn(): number {
    return this.lsn;
  }

  setAuditor(auditor: Auditor): void {
    this.auditor = auditor;
  }

  /**
   * While set (a replica, or a primary fenced by a newer epoch), every write is refused with
   * read_only_replica naming where writes go. Replay of the primary's log does not use write().
   */
  readOnlyFor: string | undefined;

  /**
   * Asked before every write; an error it returns refuses the write. A primary on a shared
   * object tier refuses this way while it does not hold a fresh lease (src/replication/lease.ts).
   */
  writeGuard: (() => Error | undefined) | undefined;

  private readonly committed: Array<(lastLsn: number) => void> = [];

  /** Called after every commit (long-polling replicas wait on this). */
  onCommitted(listener: (lastLsn: number) => void): void {
    this.committed.push(listener);
  }

  /** Calls the listener after the next commit only. */
  onCommittedOnce(listener: (lastLsn: number) => void): void {
    const once = (lsn: number) => {
      const i = this.committed.indexOf(once);
      if (i >= 0) this.committed.splice(i, 1);
      listener(lsn);
    };
    this.committed.push(once);
  }

  /** Re-reads the last LSN after the log was changed behind the writer (replay, bootstrap). */
  resync(): void {
    this.lsn = this.log.lastLsn();
    for (const l of [...this.committed]) l(this.lsn);
  }

  write<T>(actor: Actor, fn: (tx: Tx) => T): Promise<T> {
    if (this.readOnlyFor !== undefined) return Promise.reject(new ReadOnlyReplica(this.readOnlyFor));
    const refused = this.writeGuard?.();
    if (refused) return Promise.reject(refused);
    if (this.closed) return Promise.reject(new Unavailable('the node is shutting down'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ actor, fn, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  /** Commits what is queued, then refuses new writes. */
  async close(): Promise<void> {
    this.closed = true;
    await this.idle;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    if (!this.markIdle) this.idle = new Promise((r) => (this.markIdle = r));
    // setImmediate runs after the I/O callbacks of this loop turn, so every request that
    // arrived during the previous commit joins this batch.
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue.splice(0, this.options.maxBatch ?? 512);
    const started = performance.now();
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    let lastLsn = this.lsn;
    const scratch = new Map<unknown, unknown>();
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        for (const job of batch) {
          const result = this.runJob(job, scratch);
          outcomes.push(result);
          if (result.ok) lastLsn = Math.max(lastLsn, result.lsn);
        }
        this.db.exec('COMMIT');
      } catch (err) {
        this.rollbackQuietly();
        throw err;
      }
      this.lsn = lastLsn;
      this.options.onCommit?.({ seconds: (performance.now() - started) / 1000, calls: batch.length, lastLsn });
      for (const l of [...this.committed]) l(lastLsn);
      batch.forEach((job, i) => {
        const o = outcomes[i]!;
        if (o.ok) job.resolve(o.value);
        else job.reject(o.error);
      });
    } catch (err) {
      // BEGIN or COMMIT failed (disk full, I/O error, lock timeout): nothing in this batch is
      // durable, so nothing in it may be acknowledged.
      const reason = isOutOfSpace(err) ? new InsufficientStorage('the database disk') : new Unavailable(`the write could not be committed: ${(err as Error).message}`);
      for (const job of batch) job.reject(reason);
    }
    if (this.queue.length > 0) this.schedule();
    else {
      this.markIdle?.();
      this.markIdle = null;
    }
  }

  private runJob(job: Job, batch: Map<unknown, unknown>): { ok: true; value: unknown; lsn: number } | { ok: false; error: unknown } {
    let lsn = 0;
    let audited = false;
    let changed = false;
    let firstChange = '';
    const explicit: AuditEntryInput[] = [];
    const tx: Tx = {
      db: this.db,
      actor: job.actor,
      batch,
      apply: (type, payload) => {
        lsn = this.log.append(type, payload);
        if (type.audited && !changed) {
          changed = true;
          firstChange = `${type.engine}.${type.op}`;
        }
        return lsn;
      },
      audit: (action, target, detail) => {
        audited = true;
        explicit.push({ action, target, detail });
      },
    };
    this.db.prepare('SAVEPOINT job').run();
    try {
      const value = job.fn(tx);
      if (value && typeof (value as { then?: unknown }).then === 'function') {
        throw new Error('a write function must be synchronous: it runs inside a shared transaction');
      }
      // Every mutation is audited: a call that changed data without saying how gets an
      // entry named after its first change.
      if (this.auditor && (audited || changed)) {
        this.auditor(tx, audited ? explicit : [{ action: firstChange, target: '' }]);
      }
      // Prepared, not exec'd: exec parses the SQL text again on every call (a tenth of an
      // append's CPU).
      this.db.prepare('RELEASE job').run();
      return { ok: true, value, lsn };
    } catch (error) {
      this.db.prepare('ROLLBACK TO job').run();
      this.db.prepare('RELEASE job').run();
      return { ok: false, error };
    }
  }

  private rollbackQuietly(): void {
    try {
      this.db.exec('ROLLBACK');
    } catch {
      // Already rolled back by SQLite itself (for example after SQLITE_FULL).
    }
  }
}
