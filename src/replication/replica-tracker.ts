import type { SqlStore } from '../engines/sql/sql-store.js';

// The primary's view of its replicas. A replica's position is the `after` of its latest
// change-feed request: it asks for records after the last one it applied, so that LSN is
// applied (and durable there). Synchronous domains wait here until some replica's position
// passes their commit.

export interface ReplicaPosition {
  node_id: string;
  store: string;
  lsn: number;
  seen_at: number;
}

/**
 * Which replicas may confirm a synchronous write. With a lease, only those named as standbys in
 * the lease record this primary last wrote: a replica taking over after a failover checks every
 * one of them, so a confirmation from any other could be lost with it.
 */
export interface Confirmers {
  counts(nodeId: string): boolean;
  /** A replica that does not count yet reported: get it named (the lease renews early). */
  uncounted(nodeId: string): void;
}

export class ReplicaTracker {
  private readonly positions = new Map<string, ReplicaPosition>();
  private readonly waiters: Array<{ store: string; lsn: number; resolve: (ok: boolean) => void }> = [];
  confirmers: Confirmers | undefined;

  constructor(private readonly stores: Record<string, SqlStore>) {}

  report(nodeId: string, store: string, lsn: number): void {
    this.positions.set(`${nodeId}\u0000${store}`, { node_id: nodeId, store, lsn, seen_at: Date.now() });
    if (this.confirmers && !this.confirmers.counts(nodeId)) return this.confirmers.uncounted(nodeId);
    this.release(store, lsn);
  }

  /** Answers the waiters the counted replicas' positions satisfy (after the set of standbys changed). */
  recheck(): void {
    for (const p of this.positions.values()) if (this.confirmers?.counts(p.node_id) ?? true) this.release(p.store, p.lsn);
  }

  private release(store: string, lsn: number): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.store === store && lsn >= w.lsn) {
        this.waiters.splice(i, 1);
        w.resolve(true);
      }
    }
  }

  /** Resolves true once a counted replica has applied `lsn` of `store`, false after timeoutMs. */
  waitApplied(store: string, lsn: number, timeoutMs: number): Promise<boolean> {
    for (const p of this.positions.values()) if (p.store === store && p.lsn >= lsn && (this.confirmers?.counts(p.node_id) ?? true)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = { store, lsn, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          resolve(false);
        }
      }, timeoutMs).unref();
    });
  }

  /** Replicas with their main-store LSN and lag: how far behind the newest commit they are, in seconds. */
  replicas(): Array<{ node_id: string; lsn: number; lag_seconds: number; seen_seconds_ago: number; stores: Record<string, number> }> {
    const byNode = new Map<string, ReplicaPosition[]>();
    for (const p of this.positions.values()) byNode.set(p.node_id, [...(byNode.get(p.node_id) ?? []), p]);
    const now = Date.now();
    return [...byNode].map(([node_id, ps]) => {
      const main = ps.find((p) => p.store === 'main');
      const lag = Math.max(0, ...ps.map((p) => this.lagSeconds(p, now)));
      return {
        node_id,
        lsn: main?.lsn ?? 0,
        lag_seconds: Math.round(lag * 1000) / 1000,
        seen_seconds_ago: Math.round((now - Math.max(...ps.map((p) => p.seen_at))) / 100) / 10,
        stores: Object.fromEntries(ps.map((p) => [p.store, p.lsn])),
      };
    });
  }

  /** Seconds since the oldest commit the replica has not applied (0 when caught up). */
  private lagSeconds(p: ReplicaPosition, now: number): number {
    const store = this.stores[p.store];
    if (!store || p.lsn >= store.writer.lastLsn) return 0;
    const t = store.changes.timeOf(p.lsn + 1);
    return t === undefined ? (now - p.seen_at) / 1000 : (now - t) / 1000;
  }
}
