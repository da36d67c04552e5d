import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Conflict, Unavailable } from '../engines/errors.js';
import type { ObjectStore } from '../engines/objects/object-store.js';

/** What the lease needs of a store: a shared object tier (fs, S3, MinIO) or etcd (etcd-lease-store.ts). */
export type LeaseStore = Pick<ObjectStore, 'name' | 'putIf' | 'readVersioned' | 'delete'>;

// The primary's lease on a shared object tier. Fence notices are pushed to a former primary,
// but a partitioned or paused one can resume and write before the notice reaches it — and on
// a shared tier one of those writes can be a garbage collection that deletes a blob the new
// primary just referenced. The lease closes that gap without trusting anyone's wall clock:
//
// - The lease is one small object, {epoch, node_id, url, seq}, changed only by conditional
//   puts (create-if-absent, compare-and-swap on the version read).
// - The holder renews it every ttl/3 and may write only until `sent + ttl` on its own
//   monotonic clock, where `sent` is when the renewal that succeeded was sent. The monotonic
//   clock keeps running through SIGSTOP and suspend, so a holder that was paused longer than
//   the ttl finds its lease expired the instant it resumes, before it can accept a write;
//   its next renewal then fails the compare-and-swap, it reads who took over and follows them.
// - A node of a higher epoch (a promoted replica) takes the lease at once by compare-and-swap
//   but starts writing only a full ttl later: by then every write permission the old holder
//   derived from its last renewal has run out. A replica that watched the record unchanged
//   for longer than a ttl before standing (automatic failover) has already waited that out:
//   the holder's last `sent` came before the write the replica first read, so the holder's
//   permission ended before the replica's watch did (both monotonic clocks run at one rate).
// - A node of the same epoch (two primaries configured on one tier) takes it only after
//   watching it unchanged for a ttl, i.e. once its holder has stopped renewing.

export interface LeaseRecord {
  epoch: number;
  node_id: string;
  /** Where the holder serves; a node that loses the lease follows this primary. */
  url: string;
  /** Bumped on every renewal, so each write has a new version even where versions are content hashes. */
  seq: number;
  renewed_at: string;
  /**
   * The replicas whose confirmations count for this primary's synchronous writes. A replica
   * that stands in automatic failover must first hear every one of them and hold at least what
   * each holds of the synchronous stores: an acknowledged synchronous write is on one of them.
   */
  standbys?: Array<{ node_id: string; url: string }>;
}

export interface LeaseOptions {
  nodeId: string;
  ttlMs: number;
  key?: string;
  /** The replicas to publish in the record at each write (set by Replication). */
  standbys?: () => Array<{ node_id: string; url: string }>;
}

export interface LeaseEvents {
  /** Another node holds the lease now (it took over, or holds a higher epoch): stop writing. */
  lost(holder: LeaseRecord): void;
  /** This node wrote its record (taken or renewed): the standbys in it now count. */
  wrote?(record: LeaseRecord): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

export const LEASE_KEY = '_strata/primary-lease.json';

export class Lease {
  private readonly key: string;
  private version: string | undefined;
  private record: LeaseRecord | undefined;
  /** performance.now() bounds: writes are allowed in [writableFrom, validUntil). */
  private writableFrom = Infinity;
  private validUntil = 0;
  private renewer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastError = '';

  constructor(
    private readonly store: LeaseStore,
    private readonly options: LeaseOptions,
    private readonly events: LeaseEvents,
  ) {
    this.key = options.key ?? LEASE_KEY;
  }

  /** True while this node may write: it holds the lease and its last renewal is fresh. */
  valid(): boolean {
    const now = performance.now();
    return now >= this.writableFrom && now < this.validUntil;
  }

  /** Why writes are refused right now (for the 503 a client sees). */
  refusal(): Unavailable {
    const holder = this.record && this.record.node_id !== this.options.nodeId ? ` (held by ${this.record.node_id} at epoch ${this.record.epoch})` : '';
    return new Unavailable(`this primary does not hold a fresh lease on the shared object tier${holder}; writes resume once it does`);
  }

  /**
   * Refuses a store that ignores conditional puts (s3rver, some gateways): on it two
   * primaries could both "win", and a lease that cannot exclude is worse than none.
   */
  async checkStore(): Promise<void> {
    const probe = `_strata/lease-probe/${randomUUID()}`;
    try {
      const first = await this.store.putIf(probe, Buffer.from('1'), { ifAbsent: true });
      const second = await this.store.putIf(probe, Buffer.from('2'), { ifAbsent: true });
      if (first === undefined || second !== undefined) {
        throw new Error(
          `the object store "${this.store.name}" ignores conditional writes (If-None-Match / If-Match), so it cannot hold the replication lease; use MinIO or S3, or turn replication.lease off`,
        );
      }
    } finally {
      await this.store.delete(probe).catch(() => undefined);
    }
  }

  /**
   * Takes the lease for `epoch`, then keeps renewing it. Resolves when this node may write,
   * or with the record of a node that holds it at a higher epoch (this node must follow it).
   * `wait: false` refuses instead of waiting for a same-epoch holder to go stale (promotion).
   */
  async acquire(epoch: number, url: string, wait = true, watched?: { version: string; forMs: number }): Promise<{ held: true } | { held: false; holder: LeaseRecord }> {
    this.stopped = false;
    const state: { watched?: { version: string; since: number } } = {};
    let lastError = '';
    for (;;) {
      if (this.stopped) throw new Unavailable('the lease was released while being acquired');
      let step: Awaited<ReturnType<Lease['step']>>;
      try {
        step = await this.step(epoch, url, wait, state, watched);
      } catch (err) {
        // A store that is down, or a lock a crashed node left behind: keep trying (a promotion
        // gives up instead, and says why).
        if (!wait || err instanceof Conflict) throw err;
        const message = (err as Error).message;
        if (message !== lastError) this.events.log('warn', 'taking the shared tier lease failed; retrying', { error: message });
        lastError = message;
        await sleep(this.options.ttlMs / 3);
        continue;
      }
      if (step === 'again') continue;
      if (step === 'wait') {
        await sleep(this.options.ttlMs / 3);
        continue;
      }
      return step;
    }
  }

  /** One look at the lease and, where this node may, one conditional write. */
  private async step(
    epoch: number,
    url: string,
    wait: boolean,
    state: { watched?: { version: string; since: number } },
    watched: { version: string; forMs: number } | undefined,
  ): Promise<{ held: true } | { held: false; holder: LeaseRecord } | 'again' | 'wait'> {
    const sent = performance.now();
    const current = await this.read();
    const mine: LeaseRecord = { epoch, node_id: this.options.nodeId, url, seq: (current?.record?.seq ?? 0) + 1, renewed_at: new Date().toISOString(), ...this.standbys() };
    if (!current) return (await this.write(mine, { ifAbsent: true })) ? this.hold(sent) : 'again';
    const held = current.record;
    if (held && held.epoch > epoch) {
      this.record = held;
      return { held: false, holder: held };
    }
    if (!held || held.node_id === this.options.nodeId) {
      // Ours from before a restart (or unreadable): the same epoch needs no wait, since no
      // other node wrote in between.
      return (await this.write(mine, { ifVersion: current.version })) ? this.hold(sent) : 'again';
    }
    if (held.epoch < epoch) {
      // The wait is shortened only when the record swapped is the very one watched lapsing: an
      // old primary that resumed and renewed since then holds a fresh ttl (review: both were
      // writable for ttl/3 when the swap took whatever version was there).
      const takeoverDelayMs = watched && watched.version === current.version ? Math.max(0, this.options.ttlMs - watched.forMs) : this.options.ttlMs;
      if (!(await this.write(mine, { ifVersion: current.version }))) return 'again';
      this.events.log('warn', 'took the lease from a primary of an older epoch; writes start once its last renewal has run out', {
        former_holder: held.node_id,
        former_epoch: held.epoch,
        epoch,
        wait_ms: Math.round(takeoverDelayMs),
      });
      return this.hold(sent, takeoverDelayMs);
    }
    // Same epoch, another node: two primaries were started on one tier.
    this.record = held;
    if (!wait) throw new Conflict(`node ${held.node_id} already holds the lease at epoch ${epoch}`, { holder: held.node_id, url: held.url });
    const now = performance.now();
    if (!state.watched || state.watched.version !== current.version) {
      if (!state.watched) this.events.log('error', 'another primary of the same epoch holds the shared tier lease; waiting for it to lapse', { holder: held.node_id, epoch });
      state.watched = { version: current.version, since: now };
      return 'wait';
    }
    if (now - state.watched.since < this.options.ttlMs) return 'wait';
    if (await this.write(mine, { ifVersion: current.version })) return this.hold(sent);
    delete state.watched;
    return 'again';
  }

  /** The lease as it stands (for replicas watching it: automatic failover). */
  async peek(): Promise<{ version: string; record: LeaseRecord | undefined } | undefined> {
    return this.read();
  }

  /** Node ids of the standbys in the record this node last wrote (empty when it holds none). */
  publishedStandbys(): Set<string> {
    return new Set(this.record?.node_id === this.options.nodeId ? (this.record.standbys ?? []).map((s) => s.node_id) : []);
  }

  /** Renews now instead of at the next ttl/3 (a new standby waits for its name in the record). */
  renewSoon(): void {
    if (this.stopped || !this.renewer || this.renewing) return;
    clearTimeout(this.renewer);
    this.renewer = setTimeout(() => void this.renew(), 0);
    this.renewer.unref();
  }

  private standbys(): Pick<LeaseRecord, 'standbys'> {
    const list = this.options.standbys?.();
    return list && list.length > 0 ? { standbys: list } : {};
  }

  get ttlMs(): number {
    return this.options.ttlMs;
  }

  /** Stops renewing; the lease lapses after its ttl (a clean stop does not hand it over). */
  release(): void {
    this.stopped = true;
    clearTimeout(this.renewer);
    this.validUntil = 0;
  }

  private hold(sent: number, delayMs = 0): Promise<{ held: true }> {
    this.validUntil = sent + this.options.ttlMs;
    this.writableFrom = performance.now() + delayMs;
    this.scheduleRenewal();
    return sleep(delayMs).then(() => ({ held: true as const }));
  }

  private scheduleRenewal(): void {
    clearTimeout(this.renewer);
    if (this.stopped) return;
    this.renewer = setTimeout(() => void this.renew(), this.options.ttlMs / 3);
    this.renewer.unref();
  }

  private renewing = false;

  private async renew(): Promise<void> {
    const mine = this.record!;
    const sent = performance.now();
    this.renewing = true;
    try {
      const next = { ...mine, seq: mine.seq + 1, renewed_at: new Date().toISOString(), ...this.standbys() };
      if (await this.write(next, { ifVersion: this.version! })) {
        this.validUntil = sent + this.options.ttlMs;
        this.lastError = '';
      } else {
        const current = await this.read();
        const held = current?.record;
        if (current && held && held.node_id === this.options.nodeId && held.epoch === mine.epoch) {
          // Our own earlier renewal landed but its answer was lost: carry on from it.
          this.version = current.version;
          this.record = held;
        } else {
          this.validUntil = 0;
          this.writableFrom = Infinity;
          this.stopped = true;
          if (held) this.record = held;
          this.events.log('error', 'lost the shared tier lease to another node; refusing writes', { holder: held?.node_id, epoch: held?.epoch });
          if (held) this.events.lost(held);
          return;
        }
      }
    } catch (err) {
      // The store is unreachable: keep trying; writes stop by themselves when the ttl runs out.
      const message = (err as Error).message;
      if (message !== this.lastError) this.events.log('warn', 'lease renewal failed', { error: message });
      this.lastError = message;
    } finally {
      this.renewing = false;
    }
    this.scheduleRenewal();
  }

  private async read(): Promise<{ version: string; record: LeaseRecord | undefined } | undefined> {
    const v = await this.store.readVersioned(this.key);
    if (!v) return undefined;
    let record: LeaseRecord | undefined;
    try {
      const parsed = JSON.parse(v.body.toString('utf8')) as LeaseRecord;
      if (Number.isInteger(parsed.epoch) && typeof parsed.node_id === 'string' && typeof parsed.url === 'string') record = parsed;
    } catch {
      // Unreadable: treated as nobody's (see acquire).
    }
    return { version: v.version, record };
  }

  private async write(record: LeaseRecord, condition: { ifAbsent: true } | { ifVersion: string }): Promise<boolean> {
    const version = await this.store.putIf(this.key, Buffer.from(JSON.stringify(record)), condition);
    if (version === undefined) return false;
    this.version = version;
    this.record = record;
    this.events.wrote?.(record);
    return true;
  }
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}
