import { Conflict } from '../errors.js';
import type { ObjectStore } from './object-store.js';

// Which cluster an object tier belongs to, so that a node deletes only what it can prove is
// its own garbage. A restored copy of a node that points at the same tier (the same
// objects.hot.path or bucket) sees every blob the live node wrote after the backup as an
// orphan; in 0.7.0 its garbage collection deleted them, and the live node's downloads broke.
//
// - Every data dir has a cluster id (meta `cluster_id`). Replicas inherit their primary's
//   with the first snapshot, so a promoted replica owns what its primary owned; a restore
//   makes a new one (a fork of history), unless told it replaces the source.
// - The first primary to use a tier writes `_strata/tier-owner.json` naming its cluster id
//   (a conditional put: exactly one claim wins). Marker and lease stay unsealed: they hold no
//   user data and must be readable before the keyring is open.
// - A node whose cluster id differs from the marker's never deletes from that tier: deletes
//   are skipped (and counted), garbage collection refuses. `POST /v1/admin/tiers/adopt` takes
//   the tier over on purpose, e.g. after the source was lost for good.

export const OWNER_KEY = '_strata/tier-owner.json';

export interface OwnerRecord {
  cluster_id: string;
  node_id: string;
  claimed_at: string;
}

export class TierOwner {
  private marker: { record: OwnerRecord; version: string } | undefined;

  constructor(
    readonly tier: string,
    private readonly store: ObjectStore,
    private readonly self: { clusterId: () => string; nodeId: string },
  ) {}

  /** Reads the marker and, on a primary (`claim`), writes ours where there is none. */
  async load(claim: boolean): Promise<OwnerRecord | undefined> {
    await this.read();
    if (!this.marker && claim) {
      const record = this.mine();
      const version = await this.store.putIf(OWNER_KEY, Buffer.from(JSON.stringify(record)), { ifAbsent: true });
      if (version !== undefined) this.marker = { record, version };
      else await this.read();
    }
    return this.marker?.record;
  }

  /** True when the marker names this node's cluster. Unknown (never loaded) counts as not owned. */
  owned(): boolean {
    return this.marker?.record.cluster_id === this.self.clusterId();
  }

  owner(): OwnerRecord | undefined {
    return this.marker?.record;
  }

  /** Why this node must not delete from the tier (for the 409 and the log). */
  refusal(): Conflict {
    const o = this.marker?.record;
    return new Conflict(
      o
        ? `the ${this.tier} object tier belongs to cluster ${o.cluster_id} (claimed by node ${o.node_id}); this node (cluster ${this.self.clusterId()}, a restored copy?) does not delete from it. POST /v1/admin/tiers/adopt takes it over`
        : `this node has not confirmed that it owns the ${this.tier} object tier (its owner marker could not be read); it does not delete from it`,
    );
  }

  /** Takes the tier over for this node's cluster (a deliberate act: the former owner's blobs become garbage to us). */
  async adopt(): Promise<OwnerRecord> {
    await this.read();
    const record = this.mine();
    const body = Buffer.from(JSON.stringify(record));
    const version = this.marker ? await this.store.putIf(OWNER_KEY, body, { ifVersion: this.marker.version }) : await this.store.putIf(OWNER_KEY, body, { ifAbsent: true });
    if (version === undefined) throw new Conflict(`the ${this.tier} tier's owner marker changed while it was being adopted; try again`);
    this.marker = { record, version };
    return record;
  }

  private mine(): OwnerRecord {
    return { cluster_id: this.self.clusterId(), node_id: this.self.nodeId, claimed_at: new Date().toISOString() };
  }

  private async read(): Promise<void> {
    const v = await this.store.readVersioned(OWNER_KEY);
    if (!v) {
      this.marker = undefined;
      return;
    }
    try {
      const record = JSON.parse(v.body.toString('utf8')) as OwnerRecord;
      if (typeof record.cluster_id === 'string') this.marker = { record, version: v.version };
    } catch {
      this.marker = undefined;
    }
  }
}

/**
 * The store as this node may use it: everything passes, but deletes happen only while
 * `owner` says the tier is this node's. A skipped delete leaves garbage, never a hole in
 * another node's data; `skipped` counts them.
 */
export function deletingOnlyWhenOwned(store: ObjectStore, owner: TierOwner, skipped: (key: string) => void): ObjectStore {
  return {
    name: store.name,
    put: (key, body, options) => store.put(key, body, options),
    get: (key, range) => store.get(key, range),
    head: (key) => store.head(key),
    list: (prefix) => store.list(prefix),
    readVersioned: (key) => store.readVersioned(key),
    putIf: (key, body, condition) => store.putIf(key, body, condition),
    async delete(key) {
      if (owner.owned()) return store.delete(key);
      skipped(key);
    },
    ...(store.slots ? { slots: store.slots } : {}),
    ...(store.sweepIncomplete ? { sweepIncomplete: async (ms: number) => (owner.owned() ? store.sweepIncomplete!(ms) : 0) } : {}),
  };
}
