import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdLeaseStore } from '../../src/replication/etcd-lease-store.js';
import { Lease } from '../../src/replication/lease.js';
import { HAS_ETCD, startEtcd, type Etcd } from '../helpers/etcd.js';

// The lease's three operations on a real etcd: what the object tiers' contract test checks
// for putIf/readVersioned, here through etcd's JSON gateway.

describe.skipIf(!HAS_ETCD && process.env.CI !== 'true')('EtcdLeaseStore', () => {
  let etcd: Etcd;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  it('creates only when absent, swaps only on the version read, and reads back what won', async () => {
    const store = new EtcdLeaseStore([etcd.url], `/t-${Date.now()}/`);
    expect(await store.readVersioned('k')).toBeUndefined();
    const v1 = await store.putIf('k', Buffer.from('one'), { ifAbsent: true });
    expect(v1).toBeDefined();
    expect(await store.putIf('k', Buffer.from('two'), { ifAbsent: true })).toBeUndefined();
    expect(await store.readVersioned('k')).toEqual({ body: Buffer.from('one'), version: v1 });
    const v2 = await store.putIf('k', Buffer.from('two'), { ifVersion: v1! });
    expect(v2).toBeDefined();
    expect(v2).not.toBe(v1);
    // A writer holding the old version loses.
    expect(await store.putIf('k', Buffer.from('stale'), { ifVersion: v1! })).toBeUndefined();
    expect((await store.readVersioned('k'))!.body.toString()).toBe('two');
    // Eight racing compare-and-swaps on one version: exactly one wins.
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.putIf('k', Buffer.from(`r${i}`), { ifVersion: v2! })));
    expect(results.filter((r) => r !== undefined)).toHaveLength(1);
    await store.delete('k');
    expect(await store.readVersioned('k')).toBeUndefined();
  });

  it('passes the lease’s own check for conditional writes, and a dead endpoint is skipped for a live one', async () => {
    const store = new EtcdLeaseStore(['http://127.0.0.1:9', etcd.url]);
    const lease = new Lease(store, { nodeId: 'n1', ttlMs: 1000 }, { lost: () => undefined, log: () => undefined });
    await expect(lease.checkStore()).resolves.toBeUndefined();
    await expect(new EtcdLeaseStore(['http://127.0.0.1:9']).readVersioned('k')).rejects.toThrow();
  });
});
