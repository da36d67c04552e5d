import { Conflict } from '../errors.js';
import type { Actor } from '../sql/writer.js';
import type { Job, JobStore } from './job-store.js';

// Runs jobs: each kind belongs to a lane, and a lane runs one job at a time in submission
// order (dataset pipelines queue behind each other; an erasure never waits for one). Progress
// is written at most twice a second. A job cut off by shutdown keeps its state `running` and
// is run again at the next start (resume()); every handler must therefore be idempotent or
// clean up what an earlier attempt left (the dataset pipeline deletes its partial shards).

export interface JobContext {
  readonly signal: AbortSignal;
  /** Reports progress (0..1) and stats; cheap to call often. */
  progress(fraction: number, stats?: Record<string, unknown>): void;
}

export type JobHandler = (job: Job, ctx: JobContext) => Promise<Record<string, unknown>>;

const SHUTDOWN = 'shutdown';

export class JobRunner {
  private readonly handlers = new Map<string, { lane: string; run: JobHandler }>();
  private readonly lanes = new Map<string, Promise<void>>();
  private readonly running = new Map<string, AbortController>();
  private readonly cancelled = new Set<string>();

  constructor(
    private readonly store: JobStore,
    private readonly actor: Actor,
    private readonly log: (level: 'info' | 'error', msg: string, fields: Record<string, unknown>) => void,
  ) {}

  register(kind: string, lane: string, run: JobHandler): void {
    this.handlers.set(kind, { lane, run });
  }

  async submit(actor: Actor, kind: string, params: Record<string, unknown>, audit?: { action: string; target: string }): Promise<Job> {
    const job = await this.store.create(actor, kind, params, audit);
    this.schedule(job);
    return job;
  }

  /** Jobs a previous process left queued or running, in their original order. */
  resume(): void {
    for (const job of this.store.unfinished()) if (this.handlers.has(job.kind)) this.schedule(job);
  }

  async cancel(actor: Actor, id: string): Promise<Job> {
    const job = this.store.get(id);
    if (job.state !== 'queued' && job.state !== 'running') throw new Conflict(`job ${id} is already ${job.state}`);
    this.cancelled.add(id);
    const running = this.running.get(id);
    if (running) running.abort('cancelled');
    else await this.store.update(actor, id, { state: 'cancelled', progress: job.progress });
    return this.store.get(id);
  }

  /** Stops running jobs without marking them: they resume at the next start. */
  async stop(): Promise<void> {
    for (const ac of this.running.values()) ac.abort(SHUTDOWN);
    await Promise.allSettled([...this.lanes.values()]);
  }

  private schedule(job: Job): void {
    const handler = this.handlers.get(job.kind)!;
    const previous = this.lanes.get(handler.lane) ?? Promise.resolve();
    const next = previous.then(() => this.run(job, handler.run));
    this.lanes.set(handler.lane, next);
  }

  private async run(job: Job, handler: JobHandler): Promise<void> {
    if (this.cancelled.has(job.id) || this.store.get(job.id).state === 'cancelled') return;
    const ac = new AbortController();
    this.running.set(job.id, ac);
    let last = 0;
    let pending: { fraction: number; stats?: Record<string, unknown> } | undefined;
    let writing: Promise<void> = Promise.resolve();
    const flush = () => {
      if (!pending) return;
      const p = pending;
      pending = undefined;
      writing = writing.then(() => this.store.update(this.actor, job.id, { state: 'running', progress: p.fraction, ...(p.stats ? { stats: p.stats } : {}) })).catch(() => undefined);
    };
    const ctx: JobContext = {
      signal: ac.signal,
      progress: (fraction, stats) => {
        pending = { fraction: Math.min(1, Math.max(0, fraction)), ...(stats ? { stats } : {}) };
        if (performance.now() - last >= 500) {
          last = performance.now();
          flush();
        }
      },
    };
    try {
      await this.store.update(this.actor, job.id, { state: 'running', progress: 0 });
      this.log('info', 'job started', { job_id: job.id, kind: job.kind });
      const result = await handler(job, ctx);
      flush();
      await writing;
      // Done is done: if its record cannot be written now, the store holds it and retries.
      await this.store.finish(this.actor, job.id, { state: 'done', progress: 1, result }).catch((err: unknown) => this.log('error', 'job done, but its state could not be written yet; retrying', { job_id: job.id, error: (err as Error).message }));
      this.log('info', 'job done', { job_id: job.id, kind: job.kind, ...result });
    } catch (err) {
      flush();
      await writing;
      if (ac.signal.aborted && ac.signal.reason === SHUTDOWN) return;
      const cancelled = ac.signal.aborted && ac.signal.reason === 'cancelled';
      this.log(cancelled ? 'info' : 'error', cancelled ? 'job cancelled' : 'job failed', { job_id: job.id, kind: job.kind, error: (err as Error).message });
      await this.store
        .finish(this.actor, job.id, { state: cancelled ? 'cancelled' : 'failed', progress: this.store.get(job.id).progress, ...(cancelled ? {} : { error: (err as Error).message }) })
        .catch(() => undefined);
    } finally {
      this.running.delete(job.id);
      this.cancelled.delete(job.id);
    }
  }
}
