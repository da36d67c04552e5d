import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Conflict } from '../../src/engines/errors.js';
import { FsObjectStore } from '../../src/engines/objects/fs-object-store.js';
import type { ObjectStore } from '../../src/engines/objects/object-store.js';
import { S3ObjectStore } from '../../src/engines/objects/s3-object-store.js';
import { LEASE_KEY, Lease, type LeaseRecord } from '../../src/replication/lease.js';
import { api, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';
import { startS3rver } from '../helpers/s3rver.js';
import { HAS_ETCD, startEtcd } from '../helpers/etcd.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

const TTL = 600;
const quiet = () => undefined;

function lease(store: ObjectStore, nodeId: string, lost: (h: LeaseRecord) => void = quiet) {
  return new Lease(store, { nodeId, ttlMs: TTL }, { lost, log: quiet });
}

async function record(store: ObjectStore): Promise<LeaseRecord> {
  return JSON.parse((await store.readVersioned(LEASE_KEY))!.body.toString()) as LeaseRecord;
}

const leases: Lease[] = [];
afterEach(() => {
  for (const l of leases.splice(0)) l.release();
});

describe('lease', () => {
  it('is taken on an empty tier and stays valid across renewals', async () => {
    const store = new FsObjectStore(tempDir());
    const a = lease(store, 'a');
    leases.push(a);
    expect(await a.acquire(1, 'http://a')).toEqual({ held: true });
    expect(a.valid()).toBe(true);
    const first = await record(store);
    await new Promise((r) => setTimeout(r, TTL * 2));
    expect(a.valid()).toBe(true);
    const later = await record(store);
    expect(later).toMatchObject({ epoch: 1, node_id: 'a', url: 'http://a' });
    expect(later.seq).toBeGreaterThan(first.seq);
  });

  it('a promoted node takes it at once but writes only a ttl later; the old holder loses it at its next renewal', async () => {
    const store = new FsObjectStore(tempDir());
    const lostTo: LeaseRecord[] = [];
    const a = lease(store, 'a', (h) => lostTo.push(h));
    const b = lease(store, 'b');
    leases.push(a, b);
    await a.acquire(1, 'http://a');
    const started = performance.now();
    const taking = b.acquire(2, 'http://b', false);
    await expect.poll(async () => (await record(store)).node_id, { interval: 10 }).toBe('b');
    expect(b.valid()).toBe(false);
    expect(await taking).toEqual({ held: true });
    expect(performance.now() - started).toBeGreaterThanOrEqual(TTL - 5);
    expect(b.valid()).toBe(true);
    await expect.poll(() => lostTo.length, { timeout: TTL * 2 }).toBe(1);
    expect(lostTo[0]).toMatchObject({ epoch: 2, node_id: 'b', url: 'http://b' });
    expect(a.valid()).toBe(false);
  });

  it('a takeover after a watched lapse writes at once only if the record it swaps is the one watched; an old holder that renewed meanwhile costs a full ttl', async () => {
    const store = new FsObjectStore(tempDir());
    const a = lease(store, 'a');
    leases.push(a);
    await a.acquire(1, 'http://a');
    const watched = (await a.peek())!.version;
    // Unchanged since the watch began: no wait.
    a.release();
    const b = lease(store, 'b');
    leases.push(b);
    let t0 = performance.now();
    expect(await b.acquire(2, 'http://b', false, { version: watched, forMs: TTL * 2 })).toEqual({ held: true });
    expect(performance.now() - t0).toBeLessThan(TTL / 2);
    expect(b.valid()).toBe(true);
    // A resumed holder renewed after the watch began: its fresh ttl is waited out.
    const store2 = new FsObjectStore(tempDir());
    const c = lease(store2, 'c');
    leases.push(c);
    await c.acquire(1, 'http://c');
    const stale = (await c.peek())!.version;
    await expect.poll(async () => (await c.peek())!.version, { interval: 20 }).not.toBe(stale);
    c.release();
    const d = lease(store2, 'd');
    leases.push(d);
    t0 = performance.now();
    expect(await d.acquire(2, 'http://d', false, { version: stale, forMs: TTL * 2 })).toEqual({ held: true });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(TTL - 5);
  });

  it('a node of a lower or equal epoch cannot take it from a live holder', async () => {
    const store = new FsObjectStore(tempDir());
    const b = lease(store, 'b');
    leases.push(b);
    await b.acquire(2, 'http://b');
    const old = lease(store, 'a');
    leases.push(old);
    // The former primary comes back at epoch 1: it is told who holds the lease, and takes nothing.
    expect(await old.acquire(1, 'http://a')).toEqual({ held: false, holder: expect.objectContaining({ node_id: 'b', epoch: 2 }) });
    expect(old.valid()).toBe(false);
    // Another replica promoted to the same epoch is refused.
    const c = lease(store, 'c');
    leases.push(c);
    await expect(c.acquire(2, 'http://c', false)).rejects.toBeInstanceOf(Conflict);
    expect((await record(store)).node_id).toBe('b');
  });

  it('a second primary of the same epoch waits while the holder renews and takes over a ttl after it stops', async () => {
    const store = new FsObjectStore(tempDir());
    const a = lease(store, 'a');
    const b = lease(store, 'b');
    leases.push(a, b);
    await a.acquire(1, 'http://a');
    let bHeld = false;
    const waiting = b.acquire(1, 'http://b').then(() => (bHeld = true));
    await new Promise((r) => setTimeout(r, TTL * 3));
    expect(bHeld).toBe(false);
    expect(a.valid()).toBe(true);
    const stoppedAt = performance.now();
    a.release();
    await waiting;
    expect(performance.now() - stoppedAt).toBeGreaterThanOrEqual(TTL - 5);
    expect(b.valid()).toBe(true);
    expect((await record(store)).node_id).toBe('b');
  });

  it('a lock file left by a node killed mid-renewal delays the next holder by seconds, not forever', async () => {
    const root = tempDir();
    const store = new FsObjectStore(root);
    const { createHash } = await import('node:crypto');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(`${root}/.tmp`, { recursive: true });
    writeFileSync(`${root}/.tmp/lock-${createHash('sha256').update(LEASE_KEY).digest('hex').slice(0, 32)}`, '');
    const a = lease(store, 'a');
    leases.push(a);
    const t0 = performance.now();
    expect(await a.acquire(1, 'http://a')).toEqual({ held: true });
    expect(performance.now() - t0).toBeLessThan(15_000);
  }, 30_000);

  describe('on S3', () => {
    let s3: Awaited<ReturnType<typeof startS3rver>>;
    let plain: Awaited<ReturnType<typeof startS3rver>>;
    beforeAll(async () => {
      s3 = await startS3rver(['lease']);
      plain = await startS3rver(['lease'], { conditionalWrites: false });
    });
    afterAll(async () => {
      await s3.close();
      await plain.close();
    });

    it('works where the store honours conditional writes', async () => {
      const store = new S3ObjectStore({ client: s3.client, bucket: 'lease' });
      const a = lease(store, 'a');
      leases.push(a);
      await a.checkStore();
      await a.acquire(1, 'http://a');
      const b = lease(store, 'b');
      leases.push(b);
      expect(await b.acquire(2, 'http://b', false)).toEqual({ held: true });
      expect((await record(store)).node_id).toBe('b');
    });

    it('is refused on a store that ignores them (s3rver as it ships)', async () => {
      const store = new S3ObjectStore({ client: plain.client, bucket: 'lease' });
      await expect(lease(store, 'a').checkStore()).rejects.toThrow(/ignores conditional writes/);
    });
  });
});

// Two daemons on one shared object tier (one directory, as two hosts would mount one NFS path).
describe('lease between daemons', () => {
  const running: Daemon[] = [];
  let proxy: TcpProxy | undefined;
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
    for (const d of running.splice(0)) {
      try {
        d.proc.kill('SIGCONT');
      } catch {
        // gone
      }
      await d.stop().catch(() => undefined);
    }
  });

  const shared = () => {
    const dir = tempDir('strata-shared-tier-');
    return ['replication.lease.enabled=true', `replication.lease.ttl_ms=1000`, "objects.hot.driver=fs", `objects.hot.path=${dir}/hot`, "objects.archive.driver=fs", `objects.archive.path=${dir}/archive`];
  };
  const start = async (set: string[], dataDir?: string) => {
    const d = await startDaemon({ ...(dataDir ? { dataDir } : {}), set });
    running.push(d);
    return d;
  };
  const status = async (d: Daemon) => (await api(d, 'GET', '/v1/admin/status')).body;
  const writable = (d: Daemon, id: string) => expect.poll(async () => (await api(d, 'POST', '/v1/users', { id, email: `${id}@example.com`, tier: 'free' })).status, { timeout: 10_000 }).toBe(201);
  /** A primary that has its own admin token as replication.token, so it can follow whoever replaces it. */
  const primaryWithToken = async (set: string[]) => {
    const first = await start(['node.id=primary-1', ...set]);
    const token = first.adminToken;
    await first.stop();
    running.splice(running.indexOf(first), 1);
    return { p: await start(['node.id=primary-1', `replication.token=${token}`, ...set], first.dataDir), token };
  };
  /** A replica of the primary at `primaryUrl`, reusing its admin token (tokens replicate). */
  const replicaOf = async (primaryUrl: string, token: string, id: string, set: string[]) => {
    const dir = tempDir();
    writeFileSync(`${dir}/admin.token`, token + '\n');
    return start([`node.id=${id}`, 'replication.role=replica', `replication.primary_url=${primaryUrl}`, `replication.token=${token}`, ...set], dir);
  };

  it('a paused primary that never hears the fence notice refuses writes when it resumes, and follows the lease holder', async () => {
    const tier = shared();
    const { p, token } = await primaryWithToken(tier);
    await writable(p, 'before');
    // The replica reaches the primary through a proxy; cutting it keeps the fence notice from arriving.
    proxy = await startTcpProxy(Number(new URL(p.url).port));
    const r = await replicaOf(`http://127.0.0.1:${proxy.port}`, token, 'replica-1', tier);
    await expect.poll(async () => (await api(r, 'GET', '/v1/users/before')).status, { timeout: 20_000 }).toBe(200);

    p.proc.kill('SIGSTOP');
    proxy.cut();
    const t0 = performance.now();
    const promoted = await api(r, 'POST', '/v1/admin/promote');
    expect(promoted.status).toBe(200);
    // Writes start only after the old holder's lease has run out.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1000);
    expect((await api(r, 'POST', '/v1/users', { id: 'after', email: 'after@example.com', tier: 'free' })).status).toBe(201);

    p.proc.kill('SIGCONT');
    const stale = await api(p, 'POST', '/v1/users', { id: 'stale', email: 'stale@example.com', tier: 'free' });
    expect([503, 409]).toContain(stale.status);
    expect(['unavailable', 'read_only_replica']).toContain(stale.body.error.code);
    // It reads the new holder from the lease, fences itself and follows it.
    await expect.poll(async () => (await status(p)).role, { timeout: 20_000, interval: 100 }).toBe('replica');
    expect(await status(p)).toMatchObject({ epoch: promoted.body.epoch, primary: r.url });
    await expect.poll(async () => (await api(p, 'GET', '/v1/users/after')).status, { timeout: 20_000, interval: 200 }).toBe(200);
    expect((await api(p, 'GET', '/v1/users/stale')).status).toBe(404);
    expect((await api(r, 'GET', '/v1/users/stale')).status).toBe(404);
    expect(p.output()).toMatch(/lost the shared tier lease/);
    // The notice itself never got through.
    expect(r.output()).not.toMatch(/former primary acknowledged/);
  });

  it('failover: auto — when the primary dies, one replica promotes itself within a few ttl, the other follows it, and nothing acknowledged is lost', async () => {
    const tier = shared();
    const { p, token } = await primaryWithToken(tier);
    const auto = ['replication.failover=auto', ...tier];
    const [r1, r2] = [await replicaOf(p.url, token, 'replica-1', auto), await replicaOf(p.url, token, 'replica-2', auto)];
    await writable(p, 'before');
    for (const r of [r1, r2]) await expect.poll(async () => (await api(r, 'GET', '/v1/users/before')).status, { timeout: 20_000 }).toBe(200);
    // While the primary renews its lease, nobody stands: three ttl later both are still replicas.
    await new Promise((r) => setTimeout(r, 3000));
    expect([(await status(r1)).role, (await status(r2)).role]).toEqual(['replica', 'replica']);

    const t0 = performance.now();
    await p.kill9();
    // Exactly one replica becomes the primary; writes reach it.
    const winner = await (async () => {
      for (;;) {
        const roles = [(await status(r1)).role, (await status(r2)).role];
        if (roles.includes('primary')) return roles[0] === 'primary' ? r1 : r2;
        if (performance.now() - t0 > 20_000) throw new Error('no replica promoted itself');
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const loser = winner === r1 ? r2 : r1;
    await writable(winner, 'after');
    const seconds = (performance.now() - t0) / 1000;
    expect(seconds).toBeLessThan(10); // ttl 1 s: lapse ~1.3 s, takeover waits 1 ttl, plus the looks
    expect(winner.output()).toMatch(/the primary lease lapsed: promoting this replica/);
    // The other follows the winner, and has everything: the write before and the one after.
    await expect.poll(async () => (await status(loser)).primary, { timeout: 20_000, interval: 200 }).toBe(winner.url);
    expect((await status(loser)).role).toBe('replica');
    await expect.poll(async () => (await api(loser, 'GET', '/v1/users/after')).status, { timeout: 20_000, interval: 200 }).toBe(200);
    expect((await api(winner, 'GET', '/v1/users/before')).status).toBe(200);
    expect((await status(loser)).epoch).toBe((await status(winner)).epoch);
  });

  /** A primary with synchronous billing and two auto-failover replicas on a shared tier; `standbys()` reads the lease's list. */
  const syncTrio = async () => {
    const tier = shared();
    const sync = ['replication.sync_min_replicas=1', 'replication.sync_timeout_ms=3000'];
    const { p, token } = await primaryWithToken([...tier, ...sync]);
    const auto = ['replication.failover=auto', ...tier, ...sync];
    const [r1, r2] = [await replicaOf(p.url, token, 'replica-1', auto), await replicaOf(p.url, token, 'replica-2', auto)];
    await writable(p, 'before');
    const standbys = async () => ((await record(new FsObjectStore(tier[3]!.split('=')[1]!))).standbys ?? []).map((s) => s.node_id).sort();
    return { p, r1, r2, standbys };
  };

  it('failover: auto with synchronous billing — no replica stands while a standby the primary named is silent, since it may hold acknowledged writes', async () => {
    const { p, r1, r2, standbys } = await syncTrio();
    const entry = (ref: string, d: Daemon) => api(d, 'POST', '/v1/billing/entries', { user_id: 'before', kind: 'charge', amount_micros: 5, currency: 'USD', ref });
    expect((await entry('b-1', p)).status).toBe(201);
    // The lease names both replicas as the primary's standbys.
    await expect.poll(standbys, { timeout: 10_000 }).toEqual(['replica-1', 'replica-2']);
    // Both hold the entry before r2 stops. A primary names a replica its standby as soon as the
    // replica asks for a snapshot; since snapshots are taken off the event loop (0.13) the install
    // can come a moment later, and an r2 stopped before it had nothing — not even the tokens
    // (seen in CI as a 401 from r2 and no node standing).
    const lsn = (await status(p)).billing_lsn;
    for (const r of [r1, r2]) await expect.poll(async () => (await status(r)).billing_lsn, { timeout: 15_000, interval: 100 }).toBeGreaterThanOrEqual(lsn);

    r2.proc.kill('SIGSTOP');
    await p.kill9();
    // r1 sees the lapse but cannot know what r2 confirmed: it waits, and says why.
    await expect.poll(() => r1.output(), { timeout: 15_000, interval: 200 }).toMatch(/does not stand: standby replica-2 \(.*\) does not answer/);
    await new Promise((r) => setTimeout(r, 2000));
    expect((await status(r1)).role).toBe('replica');
    // Back: the two compare positions, exactly one stands, and the entry is there.
    r2.proc.kill('SIGCONT');
    await expect
      .poll(async () => [(await status(r1)).role, (await status(r2)).role].sort(), { timeout: 20_000, interval: 200 })
      .toEqual(['primary', 'replica'])
      .catch(async (err: unknown) => {
        // Seen once in CI: one node's status lacked a role. Say what each node answered and logged.
        const tail = (d: Daemon) => d.output().split('\n').filter((l) => !l.includes('"msg":"request"')).slice(-25).join('\n');
        throw new Error(`${String(err)}\nr1 status: ${JSON.stringify(await status(r1))}\nr2 status: ${JSON.stringify(await status(r2))}\nr1 log:\n${tail(r1)}\nr2 log:\n${tail(r2)}`);
      });
    const winner = (await status(r1)).role === 'primary' ? r1 : r2;
    await expect.poll(async () => (await entry('b-2', winner)).status, { timeout: 15_000, interval: 200 }).toBe(201);
    expect((await api(winner, 'GET', '/v1/billing/entries?user_id=before')).body.items.map((e: { ref: string }) => e.ref)).toEqual(['b-1', 'b-2']);
  });

  it('failover: auto with synchronous billing — a standby gone for good is retired on the replica that should stand, which then does', async () => {
    const { p, r1, r2, standbys } = await syncTrio();
    await expect.poll(standbys, { timeout: 10_000 }).toEqual(['replica-1', 'replica-2']);
    await r2.kill9();
    await p.kill9();
    await expect.poll(() => r1.output(), { timeout: 15_000, interval: 200 }).toMatch(/does not stand: standby replica-2 .* or be retired with POST \/v1\/admin\/replicas\/replica-2\/forget on this node/);
    // On the replica (not a primary), forget names the standby to ignore; it is not a 404.
    expect((await api(r1, 'POST', '/v1/admin/replicas/replica-2/forget')).status).toBe(200);
    await expect.poll(async () => (await status(r1)).role, { timeout: 15_000, interval: 200 }).toBe('primary');
    await writable(r1, 'after');
  });

  it('failover: auto — a replica that would not stand itself (failover: manual) is not waited for, even when first by node id', async () => {
    const tier = shared();
    const { p, token } = await primaryWithToken(tier);
    const r1 = await replicaOf(p.url, token, 'replica-1', ['replication.failover=auto', ...tier]);
    const dr = await replicaOf(p.url, token, 'dr-1', tier);
    await writable(p, 'before');
    for (const r of [r1, dr]) await expect.poll(async () => (await api(r, 'GET', '/v1/users/before')).status, { timeout: 20_000 }).toBe(200);
    await expect.poll(async () => ((await record(new FsObjectStore(tier[3]!.split('=')[1]!))).standbys ?? []).length, { timeout: 10_000 }).toBe(2);
    await p.kill9();
    await expect.poll(async () => (await status(r1)).role, { timeout: 15_000, interval: 200 }).toBe('primary');
    expect((await status(dr)).role).toBe('replica');
    expect(r1.output()).not.toMatch(/dr-1 is as far and first by node id/);
  });

  it.skipIf(!HAS_ETCD && process.env.CI !== 'true')('failover: auto with the lease in etcd, between nodes that share no object tier', async () => {
    const etcd = await startEtcd();
    try {
      const lease = ['replication.lease.enabled=true', 'replication.lease.ttl_ms=1000', 'replication.lease.store=etcd', `replication.lease.etcd_endpoints=[${etcd.url}]`];
      // Each node keeps its own object tiers (the defaults, in its data dir).
      const { p, token } = await primaryWithToken(lease);
      const r = await replicaOf(p.url, token, 'replica-1', ['replication.failover=auto', ...lease]);
      await writable(p, 'before');
      await expect.poll(async () => (await api(r, 'GET', '/v1/users/before')).status, { timeout: 20_000 }).toBe(200);
      const held = JSON.parse(Buffer.from(((await (await fetch(`${etcd.url}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: Buffer.from('/strata/_strata/primary-lease.json').toString('base64') }) })).json()) as { kvs: Array<{ value: string }> }).kvs[0]!.value, 'base64').toString());
      expect(held).toMatchObject({ node_id: 'primary-1', url: p.url });
      await p.kill9();
      await expect.poll(async () => (await status(r)).role, { timeout: 20_000, interval: 100 }).toBe('primary');
      await writable(r, 'after');
      expect((await api(r, 'GET', '/v1/users/before')).status).toBe(200);
    } finally {
      await etcd.stop();
    }
  });

  it('failover: auto is refused without a lease store', async () => {
    const { runCli } = await import('../helpers/daemon.js');
    const r = await runCli(['check-config', '--set', 'replication.failover=auto', '--set', `storage.data_dir=${tempDir()}`]);
    expect(r.code).toBe(0); // the schema accepts it; the start refuses it
    const d = startDaemon({ set: ['replication.failover=auto'] });
    await expect(d).rejects.toThrow(/replication.failover: auto needs a store every node can reach/);
  });

  it('a second primary started on the same tier refuses writes until the first is gone', async () => {
    const tier = shared();
    const a = await start(['node.id=primary-a', ...tier]);
    await writable(a, 'from-a');
    const b = await start(['node.id=primary-b', ...tier]);
    // Refused from the first request; once b has read the lease, the refusal names its holder.
    await expect
      .poll(async () => {
        const refused = await api(b, 'POST', '/v1/users', { id: 'from-b', email: 'b@example.com', tier: 'free' });
        expect(refused.status).toBe(503);
        return refused.body.error.message as string;
      }, { timeout: 10_000 })
      .toContain('primary-a');
    await new Promise((r) => setTimeout(r, 2500));
    expect((await api(b, 'POST', '/v1/users', { id: 'from-b', email: 'b@example.com', tier: 'free' })).status).toBe(503);
    await a.kill9();
    // Even if the kill left the lease's lock file behind, b takes over within seconds.
    await expect.poll(async () => (await api(b, 'POST', '/v1/users', { id: 'from-b', email: 'b@example.com', tier: 'free' })).status, { timeout: 30_000 }).toBe(201);
  });
});
