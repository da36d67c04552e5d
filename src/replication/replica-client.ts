import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { unpack } from 'msgpackr';
import type { ChangeRecord } from '../engines/sql/change-log.js';
import type { SqlStore } from '../engines/sql/sql-store.js';
import { applyChanges } from './change-feed.js';
import { adoptHistory, type EpochHistory } from './epoch-history.js';
import { installSnapshot } from './snapshot.js';

// The replica side of log shipping. For each SQL store (main, billing) one loop long-polls the
// primary's change feed from the store's last LSN and replays what arrives, in order, with the
// same appliers the primary ran. An empty store, a store the primary's log no longer reaches
// (410 log_pruned) and a store that is ahead of the primary (a former primary's divergent
// tail, 409) are bootstrapped from a snapshot instead. Errors back off and retry for ever: a
// replica outlives restarts of its primary.

export interface ReplicaEvents {
  /** Runs before a batch is applied: blobs the records reference are fetched first. */
  beforeApply?(store: string, records: ChangeRecord[], fetchFromPrimary: (path: string) => Promise<Response>): Promise<void>;
  applied(store: string, records: ChangeRecord[]): void;
  bootstrapped(store: string, lsn: number, fetchFromPrimary: (path: string) => Promise<Response>): Promise<void> | void;
  position(store: string, info: { applied: number; primaryLsn: number; lagSeconds: number }): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
  /** A bootstrap discarded records only this node had; they are in `file` (rollback.ts). */
  rolledBack?(store: string, file: string, records: number): void;
}

export interface ReplicaOptions {
  primaryUrl: string;
  token: string;
  nodeId: string;
  /** Where this replica listens; the primary records it, to ask for its epoch after a restart. */
  selfUrl?: () => string | undefined;
  waitMs?: number;
  /** Where a bootstrap keeps the records it discards (<data_dir>/rollback). */
  rollbackDir?: string;
  /** Where a bootstrap downloads its snapshot (the data dir); the OS temp dir without it. */
  scratchDir?: string;
}

interface FeedFrame {
  epoch: number;
  primary_lsn: number;
  records: ChangeRecord[];
  /** The primary's epoch history (epoch-history.ts); absent from primaries before 0.10. */
  history?: EpochHistory;
}

export class ReplicaClient {
  private stopped = false;
  private readonly running: Promise<void>[] = [];
  private readonly aborts = new Set<AbortController>();
  private readonly bootstrappedOnce = new Set<string>();

  constructor(
    private readonly stores: Record<string, SqlStore>,
    private readonly options: ReplicaOptions,
    private readonly events: ReplicaEvents,
    /** A former primary must discard what it wrote alone: bootstrap every store first. */
    private forceBootstrap = false,
  ) {}

  start(): void {
    for (const [name, store] of Object.entries(this.stores)) this.running.push(this.loop(name, store));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const a of this.aborts) a.abort();
    await Promise.allSettled(this.running);
  }

  private async loop(name: string, store: SqlStore): Promise<void> {
    let backoff = 250;
    // Also after a restart: a fenced node marks its stores before taking the new epoch, and
    // the mark goes only with the snapshot install (Replication.fence).
    let mustBootstrap = this.forceBootstrap || store.meta('must_bootstrap') === '1';
    while (!this.stopped) {
      // One controller per iteration, aborted by stop(): it covers the request, the body being
      // read and a snapshot being downloaded, so nothing from the old primary lands after a stop
      // (a promotion must never be followed by a late snapshot install).
      const abort = new AbortController();
      this.aborts.add(abort);
      const get = (path: string) => this.get(path, abort.signal);
      try {
        // An empty store starts from a snapshot once; the primary's store may be empty too.
        if (mustBootstrap || (store.changes.lastLsn() === 0 && !this.bootstrappedOnce.has(name))) {
          await this.bootstrap(name, store, get);
          mustBootstrap = false;
        }
        const after = store.changes.lastLsn();
        // The epoch of this store's data lets the primary see a tail it never had (epoch-history.ts).
        const res = await get(`/v1/replication/changes?store=${name}&after=${after}&epoch=${store.epoch()}&wait_ms=${this.options.waitMs ?? 5000}&${this.whoAsks()}`);
        if (res.status === 410 || res.status === 409) {
          this.events.log('warn', res.status === 410 ? 'the primary pruned its log past this replica; bootstrapping' : 'this node is ahead of the primary (a divergent tail); bootstrapping', { store: name, after });
          await res.arrayBuffer();
          await this.bootstrap(name, store, get);
          continue;
        }
        if (res.status !== 200) throw new Error(`change feed answered ${res.status}: ${await res.text()}`);
        const frame = unpack(Buffer.from(await res.arrayBuffer())) as FeedFrame;
        if (this.stopped) return;
        // A primary of an older epoch than this replica knows was replaced: following it would
        // apply writes the cluster has moved past. A newer one is adopted.
        if (frame.epoch < store.epoch()) throw new Error(`the primary is at epoch ${frame.epoch}, older than the ${store.epoch()} this replica follows: it was replaced; not applying its changes`);
        if (frame.epoch > store.epoch()) store.db.prepare("UPDATE meta SET value = ? WHERE key = 'epoch'").run(String(frame.epoch));
        adoptHistory(store, frame.history);
        if (frame.records.length > 0) {
          // Blobs before references, on the replica too.
          await this.events.beforeApply?.(name, frame.records, get);
          if (this.stopped) return;
          const last = applyChanges(store, frame.records);
          store.writer.resync();
          this.events.applied(name, frame.records);
          const newest = frame.records[frame.records.length - 1]!;
          this.events.position(name, { applied: last, primaryLsn: frame.primary_lsn, lagSeconds: last >= frame.primary_lsn ? 0 : Math.max(0, (Date.now() - newest.time) / 1000) });
        } else {
          this.events.position(name, { applied: after, primaryLsn: frame.primary_lsn, lagSeconds: 0 });
        }
        backoff = 250;
      } catch (err) {
        if (this.stopped) return;
        this.events.log('warn', 'replication from the primary failed; retrying', { store: name, err: String(err) });
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      } finally {
        this.aborts.delete(abort);
      }
    }
  }

  private async bootstrap(name: string, store: SqlStore, get: (path: string) => Promise<Response>): Promise<void> {
    // In the data dir, where `strata serve` sweeps `.snapshot-*` at start: a replica killed
    // mid-download left 100 MB in the OS temp dir for good (review), which may be a small tmpfs.
    const dir = await mkdtemp(this.options.scratchDir ? join(this.options.scratchDir, '.snapshot-') : join(tmpdir(), 'strata-snapshot-'));
    try {
      const res = await get(`/v1/replication/snapshot?store=${name}&${this.whoAsks()}`);
      if (res.status !== 200 || !res.body) throw new Error(`snapshot answered ${res.status}: ${await res.text()}`);
      // A primary of an older epoch than this node knows was replaced: never take its state
      // (a promoted node restarted as a replica would otherwise discard its own writes).
      const theirs = Number(res.headers.get('x-strata-epoch') ?? 0);
      if (theirs < store.epoch()) {
        await res.body.cancel().catch(() => undefined);
        throw new Error(`the primary at ${this.options.primaryUrl} is at epoch ${theirs}, older than this node's ${store.epoch()}: it was replaced; not bootstrapping from it`);
      }
      const file = join(dir, 'snapshot.db');
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(file));
      if (this.stopped) throw new Error('stopped while bootstrapping');
      const { lsn, rolledBack } = installSnapshot(store, file, this.options.rollbackDir ? { dir: this.options.rollbackDir, store: name, nodeId: this.options.nodeId } : undefined);
      if (rolledBack) {
        this.events.log('warn', 'discarded records only this node had (a divergent tail); they are kept in a rollback file', { store: name, records: rolledBack.records, file: rolledBack.file });
        this.events.rolledBack?.(name, rolledBack.file, rolledBack.records);
      }
      this.bootstrappedOnce.add(name);
      await this.events.bootstrapped(name, lsn, get);
      this.events.position(name, { applied: lsn, primaryLsn: lsn, lagSeconds: 0 });
      this.events.log('info', 'bootstrapped from a snapshot of the primary', { store: name, lsn });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** This replica's node id and URL, for the primary's list of replicas to ask after a restart. */
  private whoAsks(): string {
    const self = this.options.selfUrl?.();
    return `node_id=${encodeURIComponent(this.options.nodeId)}${self ? `&url=${encodeURIComponent(self)}` : ''}`;
  }

  private get(path: string, signal: AbortSignal): Promise<Response> {
    return fetch(new URL(path, this.options.primaryUrl), { headers: { authorization: `Bearer ${this.options.token}` }, signal });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
