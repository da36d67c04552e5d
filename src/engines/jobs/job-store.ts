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
        status TEXT NOT NULL,           -- queued | running | done | failed
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
];

export interface Job {
  id: string;
  kind: string;
  status: 'queued' | 'running' | 'done' | 'failed';
  progress: number;
  params: Record<string, unknown>;
  result: Record<string, unknown> | null;
  error: string | null;
  created_at: string;
  updated_at: string;
}

type JobRow = Omit<Job, 'params' | 'result'> & { params: string; result: string | null };
type JobUpdate = { id: string; status: Job['status']; progress: number; result: string | null; error: string | null; updated_at: string };

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
        d.prepare('UPDATE jobs SET status = ?, progress = ?, result = ?, error = ?, updated_at = ? WHERE id = ?').run(u.status, u.progress, u.result, u.error, u.updated_at, u.id);
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

  async update(actor: Actor, id: string, patch: { status: Job['status']; progress: number; result?: Record<string, unknown>; error?: string }): Promise<void> {
    await this.writer.write(actor, (tx) =>
      tx.apply(this.updated, {
        id,
        status: patch.status,
        progress: patch.progress,
        result: patch.result ? JSON.stringify(patch.result) : null,
        error: patch.error ?? null,
        updated_at: new Date().toISOString(),
      }),
    );
  }

  get(id: string): Job {
    const row = this.db.prepare<JobRow>('SELECT * FROM jobs WHERE id = ?').get(id);
    if (!row) throw new NotFound(`job ${id} does not exist`);
    return { ...row, params: JSON.parse(row.params) as Record<string, unknown>, result: row.result ? (JSON.parse(row.result) as Record<string, unknown>) : null };
  }

  /** Jobs a previous process left unfinished. */
  unfinished(): Job[] {
    return this.db
      .prepare<{ id: string }>("SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at")
      .all()
      .map((r) => this.get(r.id));
  }
}
