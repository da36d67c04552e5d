import { randomUUID } from 'node:crypto';
import { NotFound } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Writer } from '../sql/writer.js';

// Long work (erasure now; dataset pipelines later) as rows in SQLite, so a job outlives the
// process: a job found `queued` or `running` at start is run again, which is why every job's
// steps must be idempotent. Rows go through the change log, so replicas show the same status.

export const jobMigrations: Migration[] = [
  {
    engine: 'jobs',
    version: 1,
    name: 'jobs',
    sql: `
      CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,           -- queued | running | done | failed | cancelled
        progress REAL NOT NULL DEFAULT 0,
        params TEXT NOT NULL,
        result TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX jobs_status ON jobs (status);
    `,
  },
  {
    engine: 'jobs',
    version: 2,
    name: 'job stats',
    sql: 'ALTER TABLE jobs ADD COLUMN stats TEXT',
  },
];

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

/** As API.md shows a job: `state`, progress 0..1, stats while it runs, result when done. */
export interface Job {
  id: string;
  kind: string;
  state: JobState;
  progress: number;
  params: Record<string, unknown>;
  stats: Record<string, unknown>;
  result: Record<string, unknown> | null;
  error: string | null;
  created_at: string;
  updated_at: string;
}

type JobRow = { id: string; kind: string; status: JobState; progress: number; params: string; stats?: string | null; result: string | null; error: string | null; created_at: string; updated_at: string };
type JobUpdate = { id: string; status: JobState; progress: number; stats?: string | null; result: string | null; error: string | null; updated_at: string };

export class JobStore {
  private readonly created: ChangeType<JobRow>;
  private readonly updated: ChangeType<JobUpdate>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
  ) {
    this.created = changes.define<JobRow>('jobs', 'create', (d, j) => {
      d.prepare('INSERT INTO jobs (id, kind, status, progress, params, result, error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
        j.id, j.kind, j.status, j.progress, j.params, j.result, j.error, j.created_at, j.updated_at,
      );
    });
    this.updated = changes.define<JobUpdate>(
      'jobs',
      'update',
      (d, u) => {
        d.prepare('UPDATE jobs SET status = ?, progress = ?, stats = coalesce(?, stats), result = ?, error = ?, updated_at = ? WHERE id = ?').run(
          u.status, u.progress, u.stats ?? null, u.result, u.error, u.updated_at, u.id,
        );
      },
      { audited: false },
    );
  }

  async create(actor: Actor, kind: string, params: Record<string, unknown>, audit?: { action: string; target: string }): Promise<Job> {
    const now = new Date().toISOString();
    const row: JobRow = { id: randomUUID(), kind, status: 'queued', progress: 0, params: JSON.stringify(params), result: null, error: null, created_at: now, updated_at: now };
    await this.writer.write(actor, (tx) => {
      tx.apply(this.created, row);
      if (audit) tx.audit(audit.action, audit.target, { job_id: row.id });
    });
    return this.get(row.id);
  }

  async update(actor: Actor, id: string, patch: { state: JobState; progress: number; stats?: Record<string, unknown>; result?: Record<string, unknown>; error?: string }): Promise<void> {
    await this.writer.write(actor, (tx) =>
      tx.apply(this.updated, {
        id,
        status: patch.state,
        progress: patch.progress,
        ...(patch.stats ? { stats: JSON.stringify(patch.stats) } : {}),
        result: patch.result ? JSON.stringify(patch.result) : null,
        error: patch.error ?? null,
        updated_at: new Date().toISOString(),
      }),
    );
  }

  /**
   * A job's end (done, failed, cancelled) that could not be written — typically because the
   * disk the job filled is the database's too — is held here and retried every second until
   * it is. Until then get() answers it from memory: a job that failed on a full disk must not
   * be reported `running` for as long as the disk stays full (the CI run under Node 24 that
   * found it saw the final update refused by a WAL that had to grow). Lost on a restart, where
   * unfinished() resumes or fails the job anyway.
   */
  private readonly held = new Map<string, { patch: Parameters<JobStore['update']>[2]; at: string }>();
  private retrying: NodeJS.Timeout | undefined;

  async finish(actor: Actor, id: string, patch: Parameters<JobStore['update']>[2]): Promise<void> {
    try {
      await this.update(actor, id, patch);
      this.held.delete(id);
    } catch (err) {
      this.held.set(id, { patch, at: new Date().toISOString() });
      this.retrying ??= setInterval(() => {
        for (const [jobId, { patch: p }] of this.held) {
          this.update(actor, jobId, p).then(
            () => this.held.delete(jobId),
            () => undefined,
          );
        }
        if (this.held.size === 0) {
          clearInterval(this.retrying);
          this.retrying = undefined;
        }
      }, 1000);
      this.retrying.unref();
      throw err;
    }
  }

  get(id: string): Job {
    const row = this.db.prepare<JobRow>('SELECT * FROM jobs WHERE id = ?').get(id);
    if (!row) throw new NotFound(`job ${id} does not exist`);
    const job: Job = {
      id: row.id,
      kind: row.kind,
      state: row.status,
      progress: row.progress,
      params: JSON.parse(row.params) as Record<string, unknown>,
      stats: row.stats ? (JSON.parse(row.stats) as Record<string, unknown>) : {},
      result: row.result ? (JSON.parse(row.result) as Record<string, unknown>) : null,
      error: row.error,
      created_at: row.created_at,
      updated_at: row.updated_at,
    };
    const held = this.held.get(id);
    if (!held) return job;
    const { patch, at } = held;
    return { ...job, state: patch.state, progress: patch.progress, ...(patch.stats ? { stats: patch.stats } : {}), result: patch.result ?? null, error: patch.error ?? null, updated_at: at };
  }

  /** Jobs a previous process left unfinished. */
  unfinished(): Job[] {
    return this.db
      .prepare<{ id: string }>("SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at")
      .all()
      .map((r) => this.get(r.id));
  }
}
