import type { ChangeRecord } from '../engines/sql/change-log.js';
import type { SqlStore } from '../engines/sql/sql-store.js';
import { Conflict, Unavailable } from '../engines/errors.js';
import { appendHistory } from './epoch-history.js';
import type { Lease, LeaseRecord } from './lease.js';
import { ReplicaClient, type ReplicaEvents } from './replica-client.js';
import { ReplicaTracker } from './replica-tracker.js';

// A node's place in replication: primary (serves the change feed, tracks replicas, holds
// synchronous writes until a replica has them) or replica (follows a primary, refuses
// writes). Promotion turns a replica into the primary of a new epoch and fences the old
// primary: it is told the new epoch, stops accepting writes, and follows the new primary
// after bootstrapping from it, which discards any tail it wrote that nobody saw.
//
// The fence notice can arrive late (the old primary was paused or cut off), so where nodes
// share the object tier a lease on it (lease.ts) is the authority: a primary writes only while
// it holds a fresh lease, and one that finds a newer epoch holding it fences itself.

export type Role = 'primary' | 'replica';

export interface ReplicationOptions {
  role: Role;
  nodeId: string;
  primaryUrl?: string | undefined;
  token?: string | undefined;
  synchronous: string[];
  syncMinReplicas: number;
  syncTimeoutMs: number;
  /** Set when the object tier is shared between nodes (replication.lease.enabled). */
  lease?: Lease | undefined;
  /**
   * Without a lease, a node that starts as primary refuses writes until the replicas it last
   * knew say no newer epoch exists (see confirmEpoch). False only for a deliberate start of a
   * node that must write without asking (replication.confirm_epoch).
   */
  confirmEpoch?: boolean;
  /** Where a bootstrap keeps the records it discards (<data_dir>/rollback, rollback.ts). */
  rollbackDir?: string;
  /** Where a replica's bootstrap downloads its snapshot (the data dir). */
  scratchDir?: string;
  /** replication.failover: auto — a replica promotes itself when the primary's lease lapses. */
  autoFailover?: boolean;
  /** replication.max_lag_seconds: the lag a replica may have and still serve reads or stand (lag()). */
  maxLagSeconds?: number;
}

/** What any node says of itself at GET /replication/state (no token: role and epoch only). */
export interface NodeState {
  node_id: string;
  role: Role;
  epoch: number;
  /** The primary a replica follows (or this node's own URL on a primary). */
  primary_url: string | null;
  writable: boolean;
}

/** A node's state with its positions: asked, with a token, by replicas deciding who stands. */
export interface NodePosition extends NodeState {
  /** Each store's last applied LSN. */
  lsn: Record<string, number>;
  /** A replica within replication.max_lag_seconds. */
  within_lag: boolean;
  /** Whether this node would stand by itself (replication.failover). */
  failover: 'auto' | 'manual';
}

/** A replica the primary has served, kept in meta `known_replicas` so a restart can ask it. */
export interface KnownReplica {
  node_id: string;
  url: string;
  seen_at: string;
}

export interface ReplicationHooks {
  beforeApply?: ReplicaEvents['beforeApply'];
  applied(store: string, records: ChangeRecord[]): Promise<void> | void;
  bootstrapped(store: string, fetchFromPrimary: (path: string) => Promise<Response>): Promise<void> | void;
  rolledBack?: ReplicaEvents['rolledBack'];
  position(store: string, info: { applied: number; primaryLsn: number; lagSeconds: number }): void;
  log: ReplicaEvents['log'];
}

export class Replication {
  role: Role;
  primaryUrl: string | undefined;
  /** This node's own URL, known once it listens (sent in fence notices). */
  selfUrl: string | undefined;
  readonly tracker: ReplicaTracker;
  private client: ReplicaClient | undefined;
  private fencePusher: NodeJS.Timeout | undefined;
  /** The replica's view: per store, applied LSN and lag. */
  readonly position = new Map<string, { applied: number; primaryLsn: number; lagSeconds: number }>();

  constructor(
    private readonly stores: Record<string, SqlStore>,
    private readonly options: ReplicationOptions,
    private readonly hooks: ReplicationHooks,
  ) {
    this.role = options.role;
    this.primaryUrl = options.primaryUrl;
    this.tracker = new ReplicaTracker(stores);
    const lease = options.lease;
    // A replica not named yet gets named by an early renewal — only one this primary knows
    // (with a URL), or a feed reader that can never be named would renew the lease per request.
    if (lease) this.tracker.confirmers = { counts: (id) => lease.publishedStandbys().has(id), uncounted: (id) => this.knownReplicas().some((k) => k.node_id === id) && lease.renewSoon() };
    this.resumeRole();
    if (this.role === 'replica') this.setReadOnly(this.primaryUrl ?? 'the configured primary');
  }

  /**
   * A promotion or a fence outlives a restart. Without this, a promoted replica restarted with
   * its old command line came back as a replica, found itself "ahead" of its former primary and
   * bootstrapped its own writes away; and a fenced primary restarted as a primary again. The
   * last change of role is kept in meta with the epoch it happened at, and wins over
   * replication.role: a promotion while that epoch is the node's own, a demotion for good (a
   * replica adopts each newer epoch from its primary's feed without a change of role, and only
   * a promotion makes it a primary again; the partition test found a configured primary that
   * had followed a failover restart as a second primary of the new epoch).
   */
  private resumeRole(): void {
    const main = this.stores.main!;
    const saved = main.meta('role');
    const at = Number(main.meta('role_epoch'));
    if (!saved || (saved === 'primary' ? at !== this.epoch() : at > this.epoch())) return;
    if (saved === 'primary' && this.role === 'replica') {
      this.role = 'primary';
      this.primaryUrl = undefined;
      this.hooks.log('warn', 'this node was promoted at its current epoch: it starts as primary although replication.role says replica (set role: primary in the config)', { epoch: this.epoch() });
    } else if (saved === 'replica' && this.role === 'primary') {
      const following = main.meta('following') ?? undefined;
      this.role = 'replica';
      this.primaryUrl = following;
      this.hooks.log('warn', 'this node was fenced by a newer primary: it starts as its replica although replication.role says primary', { epoch: this.epoch(), primary: following });
    }
  }

  private saveRole(role: Role, following: string | undefined): void {
    const set = this.stores.main!.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
    set.run('role', role);
    set.run('role_epoch', String(this.epoch()));
    set.run('following', following ?? '');
  }

  /** Set from a start as primary until the epoch is confirmed (no lease configured). */
  private unconfirmed = false;
  private confirmed: Promise<void> = Promise.resolve();
  private stopped = false;

  /** Whether this node may change shared state now (writes, garbage collection, archiving). */
  writable(): boolean {
    return this.role === 'primary' && !this.unconfirmed && (this.options.lease?.valid() ?? true);
  }

  /** False while a start as primary waits for its replicas (see confirmEpoch). */
  epochConfirmed(): boolean {
    return !this.unconfirmed;
  }

  /** Resolves once a start as primary has confirmed its epoch (at once when nothing needs confirming). */
  whenConfirmed(): Promise<void> {
    return this.confirmed;
  }

  state(): NodeState {
    return { node_id: this.options.nodeId, role: this.role, epoch: this.epoch(), primary_url: (this.role === 'primary' ? this.selfUrl : this.primaryUrl) ?? null, writable: this.writable() };
  }

  /** What replicas deciding who stands compare (GET /v1/replication/position, service token). */
  positionReport(): NodePosition {
    return {
      ...this.state(),
      lsn: Object.fromEntries(Object.entries(this.stores).map(([name, s]) => [name, s.changes.lastLsn()])),
      within_lag: this.role === 'replica' && this.lag().within,
      failover: this.options.autoFailover ? 'auto' : 'manual',
    };
  }

  /** The replicas this node has served as a primary (durable across restarts). */
  knownReplicas(): KnownReplica[] {
    try {
      return JSON.parse(this.stores.main!.meta('known_replicas') ?? '[]') as KnownReplica[];
    } catch {
      return [];
    }
  }

  /**
   * Retires a node. On a primary: dropped from the replicas a restart asks (confirmEpoch) and,
   * at the next renewal, from the standbys named in the lease. On a replica: ignored as a
   * standby of the lapsed lease at this epoch when deciding whether to stand (mayStand) — the
   * dead primary's record cannot be rewritten, so this is the way out when a standby is gone
   * for good. A node that comes back and is named again at a later epoch counts again.
   */
  forgetReplica(nodeId: string): boolean {
    const main = this.stores.main!;
    const known = this.knownReplicas();
    const wasKnown = known.some((k) => k.node_id === nodeId);
    if (wasKnown) main.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('known_replicas', ?)").run(JSON.stringify(known.filter((k) => k.node_id !== nodeId)));
    if (this.role !== 'replica') return wasKnown;
    main.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('forgotten_standbys', ?)").run(JSON.stringify({ ...this.forgottenStandbys(), [nodeId]: this.epoch() }));
    return true;
  }

  private forgottenStandbys(): Record<string, number> {
    try {
      return JSON.parse(this.stores.main!.meta('forgotten_standbys') ?? '{}') as Record<string, number>;
    } catch {
      return {};
    }
  }

  /** Records where a replica that pulls from this primary can be reached (written only when new or moved). */
  rememberReplica(nodeId: string, url: string | undefined): void {
    if (!url || nodeId === this.options.nodeId) return;
    const known = this.knownReplicas();
    const entry = known.find((k) => k.node_id === nodeId);
    if (entry?.url === url) return;
    const next = [...known.filter((k) => k.node_id !== nodeId), { node_id: nodeId, url, seen_at: new Date().toISOString() }];
    // Node state, like the epoch: not logged, and written outside the writer (one row, rarely).
    this.stores.main!.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('known_replicas', ?)").run(JSON.stringify(next));
  }

  epoch(): number {
    return this.stores.main!.epoch();
  }

  /** A primary takes the lease (when there is one); a replica starts following its primary. */
  start(token = this.options.token, forceBootstrap = false): void {
    this.stopped = false;
    if (this.role === 'primary') {
      if (this.options.lease) this.holdLease();
      else this.confirmEpoch();
      return;
    }
    this.watchLease();
    if (!this.primaryUrl || !token) return;
    const events: ReplicaEvents = {
      ...(this.hooks.beforeApply ? { beforeApply: this.hooks.beforeApply } : {}),
      applied: (store, records) =>
        void Promise.resolve(this.hooks.applied(store, records)).catch((err: unknown) =>
          this.hooks.log('error', 'updating derived state after replay failed', { store, error: String(err) }),
        ),
      bootstrapped: (store, _lsn, fetchFromPrimary) => this.hooks.bootstrapped(store, fetchFromPrimary),
      position: (store, info) => {
        this.position.set(store, info);
        this.hooks.position(store, info);
      },
      log: this.hooks.log,
      ...(this.hooks.rolledBack ? { rolledBack: this.hooks.rolledBack } : {}),
    };
    this.client = new ReplicaClient(
      this.stores,
      { primaryUrl: this.primaryUrl, token, nodeId: this.options.nodeId, selfUrl: () => this.selfUrl, ...(this.options.rollbackDir ? { rollbackDir: this.options.rollbackDir } : {}), ...(this.options.scratchDir ? { scratchDir: this.options.scratchDir } : {}) },
      events,
      forceBootstrap,
    );
    this.client.start();
  }

  /** Waits until a replica applied this store's newest commit, when the store is synchronous. */
  async sync(store: string): Promise<void> {
    if (this.role !== 'primary' || this.options.syncMinReplicas === 0 || !this.options.synchronous.includes(store)) return;
    const lsn = this.stores[store]!.writer.lastLsn;
    if (!(await this.tracker.waitApplied(store, lsn, this.options.syncTimeoutMs))) {
      throw new Unavailable(
        `the write is committed here but no replica confirmed it within ${this.options.syncTimeoutMs} ms (${store} is synchronous); retry with the same idempotency key`,
      );
    }
  }

  /** Replica → primary of epoch + 1; tells the old primary, until it hears, that it is fenced. */
  async promote(lapsed?: { version: string; forMs: number }): Promise<{ epoch: number }> {
    if (this.role !== 'replica') throw new Conflict('this node is already a primary');
    const epoch = this.epoch() + 1;
    const lease = this.options.lease;
    if (lease) {
      // The lease first: if another node already holds this or a newer epoch, nothing changes
      // here. While its ttl runs out, this replica keeps applying the old primary's last writes.
      // A lapse watched for longer than a ttl (automatic failover) leaves nothing to wait for.
      const got = await lease.acquire(epoch, this.selfUrl ?? '', false, lapsed);
      if (!got.held) {
        throw new Conflict(`node ${got.holder.node_id} is the primary at epoch ${got.holder.epoch} (${got.holder.url}); this node cannot be promoted past it`, {
          holder: got.holder.node_id,
          epoch: got.holder.epoch,
        });
      }
    }
    await this.client?.stop();
    this.client = undefined;
    this.setEpoch(epoch);
    this.markMustBootstrap(false);
    // Where this epoch's log leaves the last one: a replica holding more of the old epoch has a
    // tail this node never had, and is told to bootstrap (epoch-history.ts).
    for (const s of Object.values(this.stores)) appendHistory(s, epoch, s.changes.lastLsn());
    const old = this.primaryUrl;
    this.role = 'primary';
    this.primaryUrl = undefined;
    this.saveRole('primary', undefined);
    this.setReadOnly(undefined);
    this.hooks.log('warn', 'promoted to primary', { epoch, former_primary: old });
    if (old && this.options.token) this.pushFence(old, epoch, this.options.token);
    return { epoch };
  }

  /** A newer primary says so: stop writing, follow it (bootstrapping away any divergent tail). */
  async fence(epoch: number, primaryUrl: string, token: string): Promise<{ fenced: boolean; epoch: number }> {
    if (epoch <= this.epoch()) return { fenced: false, epoch: this.epoch() };
    if (this.isSelf(primaryUrl)) throw new Conflict(`a fence names this node (${primaryUrl}) as the newer primary; refusing to follow itself`);
    this.options.lease?.release();
    this.unconfirmed = false;
    // Durable before the epoch moves: a node killed between the new epoch and the end of its
    // bootstrap would restart as a replica of that epoch with its old tail, where no fork check
    // can see it (review). The snapshot install drops the mark (it is not node meta).
    this.markMustBootstrap(true);
    this.setEpoch(epoch);
    this.hooks.log('warn', 'fenced by a newer primary; now following it', { epoch, primary: primaryUrl });
    await this.repoint(primaryUrl, token, true);
    return { fenced: true, epoch };
  }

  /**
   * Makes this node a replica of `primaryUrl` (kept across restarts) and restarts the feed.
   * A fenced primary bootstraps, discarding its divergent tail into a rollback file; a
   * replica that only changes primaries (an automatic failover's other replicas) does not.
   */
  private async repoint(primaryUrl: string, token: string | undefined, bootstrap: boolean): Promise<void> {
    this.role = 'replica';
    this.primaryUrl = primaryUrl;
    this.saveRole('replica', primaryUrl);
    this.setReadOnly(primaryUrl);
    await this.client?.stop();
    this.client = undefined;
    this.start(token, bootstrap);
  }

  /** A replica's lag on the main store against replication.max_lag_seconds (undefined: not replicating yet). */
  lag(): { seconds: number | undefined; bound: number; within: boolean } {
    const seconds = this.position.get('main')?.lagSeconds;
    const bound = this.options.maxLagSeconds ?? 30;
    return { seconds, bound, within: seconds !== undefined && seconds <= bound };
  }

  private leaseWatcher: NodeJS.Timeout | undefined;

  /**
   * Automatic failover (replication.failover: auto): a replica reads the lease every ttl/3 on
   * its own monotonic clock. A primary renews it every ttl/3, so a version unchanged for a ttl
   * (plus one look, for the read's own latency) means the primary stopped. A replica within
   * max_lag_seconds then asks the standbys named in the lapsed record (mayStand) and, if it is
   * the one to stand, takes the lease by compare-and-swap — exactly one wins — and writes at
   * once when the record it replaced is the one it watched lapse (lease.ts). A holder of a newer
   * epoch, or of this epoch under another URL, is followed.
   */
  private watchLease(): void {
    const lease = this.options.lease;
    if (!lease || !this.options.autoFailover || this.leaseWatcher) return;
    const ttl = lease.ttlMs;
    let seen: { version: string; since: number } | undefined;
    let toldTooFarBehind = false;
    let toldWhy = '';
    /** Per lapse: since when this replica has deferred to each more advanced one. */
    const deferrals = new Map<string, number>();
    let busy = false;
    const look = async () => {
      if (this.stopped || this.role !== 'replica') return;
      const current = await lease.peek().catch(() => undefined);
      if (!current) return;
      const holder = current.record;
      // >=: a replica restarted with its configured primary_url (a node since demoted) is at the
      // holder's epoch already, and would otherwise keep asking a replica for the feed.
      if (holder && holder.epoch >= this.epoch() && holder.url && holder.url !== this.primaryUrl && !this.isSelf(holder.url)) {
        this.hooks.log('warn', 'a newer primary holds the lease: following it', { epoch: holder.epoch, primary: holder.url });
        await this.repoint(holder.url, this.options.token, false);
        seen = undefined;
        return;
      }
      const now = performance.now();
      if (!seen || seen.version !== current.version) {
        seen = { version: current.version, since: now };
        toldTooFarBehind = false;
        deferrals.clear();
        return;
      }
      if (now - seen.since < ttl + ttl / 3) return;
      const lag = this.lag();
      if (!lag.within || !this.position.get('main')) {
        // Said once per lapse, not at every look.
        if (!toldTooFarBehind) this.hooks.log('warn', 'the primary lease lapsed, but this replica is too far behind to stand', { lag_seconds: lag.seconds ?? null, max_lag_seconds: lag.bound });
        toldTooFarBehind = true;
        return;
      }
      const verdict = await this.mayStand(holder, deferrals, ttl);
      if (verdict !== true) {
        if (verdict !== toldWhy) this.hooks.log('warn', `the primary lease lapsed, but this replica does not stand: ${verdict}`);
        toldWhy = verdict;
        return;
      }
      toldWhy = '';
      // Equals were ordered by node id above; this only spreads out two nodes that saw
      // different answers (one standby answered one of them only).
      await new Promise((r) => setTimeout(r, hashOf(this.options.nodeId) % 97));
      const again = await lease.peek().catch(() => undefined);
      if (!again || again.version !== seen.version || this.role !== 'replica' || this.stopped) return;
      this.hooks.log('warn', 'the primary lease lapsed: promoting this replica (replication.failover: auto)', { lapsed_for_ms: Math.round(performance.now() - seen.since), former_primary: this.primaryUrl });
      try {
        await this.promote({ version: seen.version, forMs: performance.now() - seen.since });
      } catch (err) {
        // Another replica won the compare-and-swap: the next look follows it.
        this.hooks.log('info', 'did not take the lease; another replica did', { error: (err as Error).message });
      }
      seen = undefined;
    };
    this.leaseWatcher = setInterval(() => {
      if (busy) return;
      busy = true;
      void look().finally(() => (busy = false));
    }, ttl / 3);
    this.leaseWatcher.unref();
  }

  /**
   * Whether this replica may take over from the primary whose lapsed lease is `lapsed`: it asks
   * every standby named there (the replicas whose confirmations the old primary counted) for
   * its position, with the replication token. An acknowledged synchronous write is on at least
   * one of them, so with synchronous stores in use every one must answer — one that is down or
   * cut off blocks the failover (safety before availability, as in Patroni's synchronous mode)
   * until it is back or forgotten here — and this node must hold at least what each holds of
   * them. Among replicas that would stand themselves (failover: auto, within lag) the most
   * advanced stands (synchronous stores first, then main; ties by node id), so the others'
   * extra asynchronous records are few and the fork check rolls them back. Deferring to one
   * that does not take the lease within two ttl (it cannot reach the lease store, say) ends:
   * its asynchronous lead is then not worth the outage. Returns true, or why not.
   */
  private async mayStand(lapsed: LeaseRecord | undefined, deferrals: Map<string, number>, ttl: number): Promise<true | string> {
    const syncOn = this.options.syncMinReplicas > 0 && this.options.synchronous.length > 0;
    const order = [...this.options.synchronous.filter((s) => s in this.stores), ...Object.keys(this.stores).filter((s) => !this.options.synchronous.includes(s))];
    const mine = order.map((s) => this.stores[s]!.changes.lastLsn());
    const forgotten = this.forgottenStandbys();
    const standbys = (lapsed?.standbys ?? []).filter((s) => s.node_id !== this.options.nodeId && forgotten[s.node_id] !== this.epoch());
    for (const standby of standbys) {
      let theirs: NodePosition;
      try {
        const res = await fetch(new URL('/v1/replication/position', standby.url), { headers: { authorization: `Bearer ${this.options.token ?? ''}` }, signal: AbortSignal.timeout(2000) });
        if (!res.ok) throw new Error(`answered ${res.status}`);
        theirs = (await res.json()) as NodePosition;
      } catch (err) {
        if (syncOn) return `standby ${standby.node_id} (${standby.url}) does not answer (${(err as Error).message}), and it may hold acknowledged synchronous writes; it must answer, or be retired with POST /v1/admin/replicas/${standby.node_id}/forget on this node`;
        continue;
      }
      if (theirs.epoch > this.epoch()) return `${theirs.node_id} is at a newer epoch ${theirs.epoch}`;
      const cmp = compareLsns(order.map((s) => theirs.lsn?.[s] ?? 0), mine);
      if (cmp < 0 || (cmp === 0 && theirs.node_id > this.options.nodeId)) continue;
      const ahead = syncOn && this.options.synchronous.some((s) => (theirs.lsn?.[s] ?? 0) > this.stores[s]!.changes.lastLsn());
      const wouldStand = theirs.role === 'replica' && theirs.within_lag && theirs.failover === 'auto';
      const since = deferrals.get(theirs.node_id) ?? performance.now();
      deferrals.set(theirs.node_id, since);
      if (wouldStand && performance.now() - since < 2 * ttl) return `${theirs.node_id} is ${cmp > 0 ? 'further ahead' : 'as far and first by node id'}; it stands`;
      if (ahead) return `${theirs.node_id} holds synchronous writes this node lacks${wouldStand ? ' but has not taken the lease' : ` but cannot stand (${theirs.role}, failover ${theirs.failover}, ${theirs.within_lag ? 'within' : 'beyond'} max_lag_seconds)`}`;
    }
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.leaseWatcher);
    clearInterval(this.fencePusher);
    this.options.lease?.release();
    await this.client?.stop();
  }

  /**
   * Takes the lease in the background (writes answer 503 until it is held). A holder of a
   * higher epoch means this node was replaced while it was away: it fences itself and follows.
   */
  private holdLease(): void {
    const lease = this.options.lease;
    if (!lease) return;
    // From the first start on (opening the node may still write its own first admin token).
    for (const s of Object.values(this.stores)) s.writer.writeGuard = () => (this.role === 'primary' && !lease.valid() ? lease.refusal() : undefined);
    lease.acquire(this.epoch(), this.selfUrl ?? '').then(
      (got) => {
        if (!got.held) this.leaseLost(got.holder);
        else this.hooks.log('info', 'holding the shared object tier lease', { epoch: this.epoch() });
      },
      (err: unknown) => this.hooks.log('error', 'could not take the shared object tier lease; writes stay refused', { error: (err as Error).message }),
    );
  }

  /**
   * A primary that starts again may have been replaced while it was down: a replica promoted
   * to a newer epoch, whose fence notice can only reach this node once it listens again. In
   * 0.7.0 it accepted writes in that window (22 in 1.5 s in the issue's test) and then
   * followed the new primary, discarding them. So, without a lease, a start as primary asks
   * the replicas it last served (meta `known_replicas`) for their epoch, and refuses writes
   * (503) until:
   * - one answers with a newer epoch: this node fences itself and follows that primary; or
   * - every one has answered with no newer epoch.
   * Every one, not some: a replica that still follows this node proves nothing about another
   * that may have been promoted and is now out of reach (the review found 565 writes lost to a
   * "confirmation" by the wrong replica). While any is silent, writes stay refused; a replica
   * retired for good is dropped from the list with POST /v1/admin/replicas/{node_id}/forget.
   * A node with no known replica has nobody who could have replaced it and writes at once.
   * replication.confirm_epoch=false skips this for a deliberate single-node start.
   */
  private confirmEpoch(): void {
    const peers = () => this.knownReplicas().filter((k) => k.node_id !== this.options.nodeId);
    if (this.options.confirmEpoch === false || peers().length === 0) return;
    this.unconfirmed = true;
    const epoch = this.epoch();
    for (const s of Object.values(this.stores)) {
      s.writer.writeGuard = () =>
        this.unconfirmed && this.role === 'primary'
          ? new Unavailable(`this primary restarted and is confirming epoch ${epoch} with its replicas (${peers().map((p) => p.node_id).join(', ')}); writes resume once every one has answered`)
          : undefined;
    }
    this.hooks.log('warn', 'started as primary: confirming the epoch with the known replicas before accepting writes', { epoch, replicas: peers().map((p) => p.url) });
    this.confirmed = this.askReplicas(peers, epoch);
  }

  /** Whether `url` is this node's own address (a node must never follow itself). */
  private isSelf(url: string | null | undefined): boolean {
    if (!url || !this.selfUrl) return false;
    try {
      return new URL(url).host === new URL(this.selfUrl).host;
    } catch {
      return false;
    }
  }

  private async askReplicas(known: () => KnownReplica[], epoch: number): Promise<void> {
    const answered = new Map<string, NodeState>();
    let lastNag = Date.now();
    while (!this.stopped && this.unconfirmed && this.role === 'primary') {
      const peers = known();
      await Promise.all(
        peers
          .filter((p) => !answered.has(p.node_id))
          .map(async (p) => {
            let state: NodeState;
            try {
              const res = await fetch(new URL('/replication/state', p.url), { signal: AbortSignal.timeout(2000) });
              if (!res.ok) return;
              state = (await res.json()) as NodeState;
            } catch {
              return; // down or unreachable: asked again next round
            }
            if (!Number.isInteger(state.epoch)) return;
            if (state.epoch > epoch) {
              const primary = state.role === 'primary' ? p.url : state.primary_url;
              if (this.isSelf(primary)) {
                this.hooks.log('error', 'a replica of a newer epoch names this node as its primary; not following itself, writes stay refused', { epoch: state.epoch, told_by: p.node_id });
                return;
              }
              this.hooks.log('error', 'a newer primary exists: this node was replaced while it was down; fencing itself', { epoch: state.epoch, told_by: p.node_id, primary });
              if (primary) {
                if (!this.options.token) this.hooks.log('error', 'replication.token is not set, so this node cannot follow the new primary; it stays read-only', { primary });
                await this.fence(state.epoch, primary, this.options.token ?? '');
                if (!this.options.token) await this.client?.stop();
              } else {
                this.setReadOnly('the primary of epoch ' + state.epoch);
                this.role = 'replica';
                this.unconfirmed = false;
              }
              return;
            }
            if (state.role === 'primary') {
              this.hooks.log('error', 'another node says it is the primary of the same epoch; writes stay refused until one of them is stopped', { node: state.node_id, url: p.url, epoch });
              return;
            }
            answered.set(p.node_id, state);
          }),
      );
      if (!this.unconfirmed || this.role !== 'primary') return;
      if (peers.every((p) => answered.has(p.node_id))) {
        this.unconfirmed = false;
        this.hooks.log('info', 'epoch confirmed by every known replica; accepting writes', { epoch, replicas: [...answered.keys()] });
        return;
      }
      if (Date.now() - lastNag >= 10_000) {
        lastNag = Date.now();
        const silent = peers.filter((p) => !answered.has(p.node_id));
        this.hooks.log('warn', 'known replicas have not answered; writes stay refused (forget a retired one with POST /v1/admin/replicas/{node_id}/forget)', { epoch, silent: silent.map((p) => `${p.node_id} ${p.url}`) });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** The lease went to another node (called by the lease, or found at start). */
  leaseLost(holder: { epoch: number; url: string; node_id: string }): void {
    if (this.role !== 'primary') return;
    if (holder.epoch > this.epoch()) {
      if (!this.options.token) {
        this.setReadOnly(holder.url);
        this.hooks.log('error', 'a newer primary holds the lease, but replication.token is not set, so this node cannot follow it', { holder: holder.node_id });
      }
      void this.fence(holder.epoch, holder.url, this.options.token ?? '');
      return;
    }
    // Same epoch: another primary took over while this one was stalled; wait for it to lapse.
    this.holdLease();
  }

  private pushFence(oldPrimary: string, epoch: number, token: string): void {
    const attempt = async () => {
      try {
        const res = await fetch(new URL('/v1/replication/fence', oldPrimary), {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ epoch, primary_url: this.selfUrl ?? '' }),
          signal: AbortSignal.timeout(2000),
        });
        if (res.ok) {
          clearInterval(this.fencePusher);
          this.hooks.log('info', 'the former primary acknowledged the new epoch', { former_primary: oldPrimary, epoch });
        }
      } catch {
        // Still down (or stopped): keep telling it until it listens.
      }
    };
    this.fencePusher = setInterval(() => void attempt(), 500);
    this.fencePusher.unref();
    void attempt();
  }

  /** meta `must_bootstrap` per store: read by ReplicaClient, which bootstraps the store first. */
  private markMustBootstrap(on: boolean): void {
    for (const s of Object.values(this.stores)) {
      if (on) s.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('must_bootstrap', '1')").run();
      else s.db.prepare("DELETE FROM meta WHERE key = 'must_bootstrap'").run();
    }
  }

  private setEpoch(epoch: number): void {
    // The epoch is node state, not data: it is not logged, and each store keeps it.
    for (const s of Object.values(this.stores)) s.db.prepare("UPDATE meta SET value = ? WHERE key = 'epoch'").run(String(epoch));
  }

  private setReadOnly(primary: string | undefined): void {
    for (const s of Object.values(this.stores)) s.writer.readOnlyFor = primary;
  }
}

/** Lexicographic order of two position vectors (same store order). */
function compareLsns(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! > b[i]! ? 1 : -1;
  return 0;
}

/** A small stable number from a node id (a tie-breaker between equally advanced replicas). */
function hashOf(text: string): number {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) >>> 0;
  return h;
}
