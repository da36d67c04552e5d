import type { Writer } from '../engines/sql/writer.js';
import type { Metrics } from './metrics.js';

// Failed authentication: counted at once (strata_auth_failures_total), audited as one
// `auth.failed` entry per second with the counts — one write per bad request would let anyone
// flood the audit log and the disk. Neither the token nor any part of it is recorded.

export class AuthFailures {
  private counts: Record<string, number> = {};
  private flush: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly metrics: Metrics,
    private readonly writer: Writer,
    /** Only a node that may write audits (a replica counts, its primary's log is the record). */
    private readonly mayAudit: () => boolean,
  ) {}

  record(reason: 'missing' | 'invalid'): void {
    this.metrics.authFailures.labels(reason).inc();
    this.counts[reason] = (this.counts[reason] ?? 0) + 1;
    if (this.flush || !this.mayAudit()) return;
    this.flush = setTimeout(() => {
      const counts = this.counts;
      this.counts = {};
      this.flush = undefined;
      this.writer.write({ tokenId: 'system' }, (tx) => tx.audit('auth.failed', 'http', counts)).catch(() => undefined);
    }, 1000);
    this.flush.unref?.();
  }

  close(): void {
    clearTimeout(this.flush);
  }
}
