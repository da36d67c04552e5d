import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { JobStore, jobMigrations } from '../../../src/engines/jobs/job-store.js';
import { SqlStore } from '../../../src/engines/sql/sql-store.js';
import { tempDir } from '../../helpers/daemon.js';

const actor = { tokenId: 'tok_test' };

describe('job store', () => {
  it("holds a job's end that cannot be written (a full disk refuses the write) and reports it at once; writes it as soon as it can", async () => {
    const sql = await SqlStore.open(join(tempDir(), 'jobs.db'), jobMigrations);
    const jobs = new JobStore(sql.db, sql.changes, sql.writer);
    const job = await jobs.create(actor, 'test', {});
    await jobs.update(actor, job.id, { state: 'running', progress: 0.1 });
    // Every write refused, as on a full disk (the refusal is the writer's own, not a mock).
    sql.writer.readOnlyFor = 'a full disk, for this test';
    await expect(jobs.finish(actor, job.id, { state: 'failed', progress: 0.1, error: 'no space left' })).rejects.toThrow();
    expect(jobs.get(job.id)).toMatchObject({ state: 'failed', error: 'no space left' });
    const row = () => sql.db.prepare<{ status: string }>('SELECT status FROM jobs WHERE id = ?').get(job.id)!.status;
    expect(row()).toBe('running');
    // Space again: the held end is written within about a second.
    sql.writer.readOnlyFor = undefined;
    await expect.poll(row, { timeout: 5000, interval: 100 }).toBe('failed');
    expect(jobs.get(job.id)).toMatchObject({ state: 'failed', error: 'no space left' });
    await sql.close();
  });
});
