import { Conflict } from '../engines/errors.js';
import type { Actor } from '../engines/sql/writer.js';
import type { StrataNode } from './strata-node.js';

// The periodic work of a serving node: replication and backups, replica metrics, change-log
// pruning, checkpoint retention and object GC, vector index saves and compaction, data
// retention and the conversation archive. Offline CLI commands open a node without it.

const SYSTEM: Actor = { tokenId: 'system' };

export class BackgroundJobs {
  private readonly timers: Array<ReturnType<typeof setInterval>> = [];

  constructor(private readonly node: StrataNode) {}

  start(): void {
    const node = this.node;
    node.replication.start();
    // Jobs write; a primary confirming its epoch resumes them once it may.
    if (node.replication.role === 'primary') {
      void node.replication.whenConfirmed().then(
        () => node.replication.writable() && node.jobRunner.resume(),
        (err: unknown) => node.log.error({ err }, 'confirming the epoch failed; writes stay refused'),
      );
    }
    node.backups?.start();
    // Keep primary-side replica metrics fresh between /v1/admin/status calls.
    this.every(5, () => node.status());
    this.every(60, () => node.pruneChangeLog());
    // Replicas get these effects from their primary's log; a primary without a fresh lease
    // must not delete from a tier another primary may be writing to.
    this.repeat(node.config.objects.gc_interval_seconds, true, async () => {
      await node.checkpoints.applyRetention(SYSTEM, node.config.checkpoints).then(
        (r) => node.log.info(r, 'checkpoint retention done'),
        (err: unknown) => node.log.error({ err }, 'checkpoint retention failed'),
      );
      await node.collectGarbage(SYSTEM, node.config.objects.gc_grace_seconds * 1000, node.config.objects.upload_session_ttl_seconds * 1000).then(
        (r) => node.log.info(r, 'garbage collection done'),
        (err: unknown) => node.log[err instanceof Conflict ? 'warn' : 'error']({ err: err instanceof Conflict ? err.message : err }, 'garbage collection skipped'),
      );
    });
    // Save first (a restart then replays little), then compact what has too many tombstones.
    this.repeat(node.config.vectors.save_interval_seconds, false, () =>
      node.vectors
        .saveAll()
        .then(() => node.vectors.compactIfNeeded())
        .then((compacted) => compacted.length && node.log.info({ collections: compacted }, 'vector indexes compacted'))
        .catch((err: unknown) => node.log.error({ err }, 'vector index maintenance failed')),
    );
    this.repeat(node.config.retention.interval_seconds, true, () =>
      node.runRetention(false).catch((err: unknown) => node.log.error({ err }, 'retention job failed; the next run resumes it')),
    );
    this.repeat(node.config.conversations.archive.interval_seconds, true, () =>
      node.runConversationArchive().catch((err: unknown) => node.log.error({ err }, 'conversation archive job failed; the next run resumes it')),
    );
  }

  stop(): void {
    for (const t of this.timers.splice(0)) clearInterval(t);
  }

  /** A plain interval that never keeps the process alive. */
  private every(seconds: number, run: () => unknown): void {
    const timer = setInterval(run, seconds * 1000);
    timer.unref();
    this.timers.push(timer);
  }

  /**
   * Runs `run` every `seconds` (0: never), one run at a time — a slow object tier must not
   * stack runs on top of each other — and, with `writable`, only while this node may write.
   */
  private repeat(seconds: number, writable: boolean, run: () => Promise<unknown>): void {
    if (seconds <= 0) return;
    let running = false;
    const timer = setInterval(() => {
      if (running || (writable && !this.node.replication.writable())) return;
      running = true;
      run()
        .catch((err: unknown) => this.node.log.error({ err }, 'periodic job failed'))
        .finally(() => (running = false));
    }, seconds * 1000);
    timer.unref();
    this.timers.push(timer);
  }
}
