import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';

// Primary and replica as two real daemons on one machine, talking HTTP.

const running: Daemon[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) {
    try {
      d.proc.kill('SIGCONT');
    } catch {
      // already gone
    }
    await d.stop().catch(() => undefined);
  }
});

async function primary(set: string[] = []) {
  const d = await startDaemon({ set: ['node.id=primary-1', ...set] });
  running.push(d);
  return d;
}

/** A replica of `p`; it has no token of its own, so the test reuses the primary's admin token. */
async function replica(p: Daemon, set: string[] = [], dataDir = tempDir()) {
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, 'admin.token'), p.adminToken + '\n');
  const d = await startDaemon({
    dataDir,
    set: ['node.id=replica-1', 'replication.role=replica', `replication.primary_url=${p.url}`, `replication.token=${p.adminToken}`, ...set],
  });
  running.push(d);
  return d;
}

const status = async (d: Daemon) => (await api(d, 'GET', '/v1/admin/status')).body;

async function caughtUp(r: Daemon, p: Daemon) {
  await expect
    .poll(async () => {
      const [ps, rs] = [await status(p), await status(r)];
      return rs.lsn === ps.lsn && rs.billing_lsn === ps.billing_lsn;
    }, { timeout: 20_000, interval: 100 })
    .toBe(true);
}

/** SHA-256 of every table of a store's file, read-only (the daemon keeps running). */
function tableHashes(dataDir: string, file = 'strata.db'): Record<string, string> {
  const db = new Database(join(dataDir, file), { readonly: true });
  try {
    // meta is node state (epoch, backup position), not replicated data; the epoch is compared by status.
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'meta' ORDER BY name").all() as Array<{ name: string }>;
    return Object.fromEntries(
      tables.map(({ name }) => {
        const rows = db.prepare(`SELECT * FROM "${name}" ORDER BY 1, 2`).raw().all();
        return [name, createHash('sha256').update(JSON.stringify(rows, (_, v) => (typeof v === 'bigint' ? String(v) : v?.type === 'Buffer' ? Buffer.from(v.data).toString('hex') : v))).digest('hex')];
      }),
    );
  } finally {
    db.close();
  }
}

async function seed(p: Daemon, tag: string) {
  await api(p, 'POST', '/v1/users', { id: `u-${tag}`, email: `${tag}@example.com`, tier: 'pro' });
  const conv = (await api(p, 'POST', '/v1/conversations', { user_id: `u-${tag}` })).body.id as string;
  await api(p, 'POST', `/v1/conversations/${conv}/messages`, { messages: [{ role: 'user', content: `hello ${tag}` }, { role: 'assistant', content: 'hi', tokens: 3 }] });
  await api(p, 'POST', '/v1/billing/entries', { user_id: `u-${tag}`, kind: 'charge', amount_micros: 100, currency: 'USD', ref: `ref-${tag}` });
  return conv;
}

const VECS = Array.from({ length: 50 }, (_, i) => ({ id: `v${i}`, values: [Math.sin(i), Math.cos(i), Math.sin(i * 0.3), 1], metadata: { even: i % 2 === 0 } }));
const query = async (d: Daemon) => (await api(d, 'POST', '/v1/collections/vc/query', { vector: [0.5, 0.5, 0.1, 1], top_k: 5, filter: { even: true } })).body.matches;

describe('replication', () => {
  it('a replica bootstraps, follows, serves reads with the primary tokens, equals the primary and refuses writes', async () => {
    const p = await primary();
    await seed(p, 'a');
    await api(p, 'POST', '/v1/collections', { name: 'vc', dimensions: 4, metric: 'cos' });
    await api(p, 'POST', '/v1/collections/vc/upsert', { vectors: VECS });
    const r = await replica(p);
    await caughtUp(r, p);
    // Changes after the bootstrap arrive through the feed.
    const conv = await seed(p, 'b');
    await api(p, 'POST', '/v1/collections/vc/upsert', { vectors: [{ id: 'v0', values: [0.5, 0.5, 0.1, 1], metadata: { even: true } }] });
    await caughtUp(r, p);
    expect(tableHashes(r.dataDir)).toEqual(tableHashes(p.dataDir));
    expect(tableHashes(r.dataDir, 'billing.db')).toEqual(tableHashes(p.dataDir, 'billing.db'));
    // Indexes follow the applied records asynchronously (in the replica's index worker).
    const onPrimary = await query(p);
    await expect.poll(() => query(r), { timeout: 10_000, interval: 100 }).toEqual(onPrimary);
    expect(onPrimary[0].id).toBe('v0');
    expect((await api(r, 'GET', `/v1/conversations/${conv}/messages`)).body.items).toHaveLength(2);

    const refused = await api(r, 'POST', '/v1/users', { email: 'x@example.com', tier: 'free' });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('read_only_replica');
    expect(refused.body.error.message).toContain(p.url);
    const ps = await status(p);
    expect(ps.role).toBe('primary');
    expect(ps.replicas).toEqual([expect.objectContaining({ node_id: 'replica-1', lsn: ps.lsn, lag_seconds: 0 })]);
    expect((await status(r)).role).toBe('replica');
    expect((await api(r, 'GET', '/readyz', undefined, null)).status).toBe(200);
    const metrics = (await api(r, 'GET', '/metrics', undefined, null)).body as string;
    expect(metrics).toMatch(new RegExp(`strata_replication_applied_lsn\\{replica="replica-1",store="main"\\} ${ps.lsn}`));
  });

  it('a dataset upload on the primary does not stop a replica with its own tier (review: it asked for the file as a blob for ever)', async () => {
    const p = await primary();
    const r = await replica(p);
    await caughtUp(r, p);
    expect((await api(p, 'POST', '/v1/datasets', { name: 'rep' })).status).toBe(201);
    const put = await fetch(`${p.url}/v1/datasets/rep/raw/a.jsonl`, { method: 'PUT', headers: { authorization: `Bearer ${p.adminToken}` }, body: '{"text":"one row"}\n' });
    expect(put.status).toBe(201);
    expect((await api(p, 'POST', '/v1/users', { id: 'after-dataset', email: 'a@example.com', tier: 'free' })).status).toBe(201);
    await caughtUp(r, p);
    expect((await api(r, 'GET', '/v1/users/after-dataset')).status).toBe(200);
    expect((await api(r, 'GET', '/v1/datasets/rep')).status).toBe(200);
  });

  it('a paused replica resumes from its LSN; with the log pruned past it, it bootstraps again', async () => {
    const p = await primary(['replication.log_retention_seconds=1']);
    await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    r.proc.kill('SIGSTOP');
    for (let i = 0; i < 20; i++) await seed(p, `load${i}`);
    r.proc.kill('SIGCONT');
    await caughtUp(r, p);
    expect(tableHashes(r.dataDir)).toEqual(tableHashes(p.dataDir));

    await r.stop();
    running.splice(running.indexOf(r), 1);
    for (let i = 0; i < 5; i++) await seed(p, `more${i}`);
    await new Promise((res) => setTimeout(res, 1100));
    await seed(p, 'last');
    expect((await api(p, 'POST', '/v1/admin/changelog/prune')).body.pruned).toBeGreaterThan(0);
    const again = await replica(p, [], r.dataDir);
    await caughtUp(again, p);
    expect(again.output()).toMatch(/pruned its log past this replica; bootstrapping/);
    expect(tableHashes(again.dataDir)).toEqual(tableHashes(p.dataDir));
  });

  it('kill -9 of the primary mid-write leaves the replica consistent, and it catches up after the restart', async () => {
    const p = await primary();
    const conv = await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    let stop = false;
    const writers = Array.from({ length: 8 }, async () => {
      while (!stop) {
        try {
          await api(p, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'x', tokens: 1 });
        } catch {
          return;
        }
      }
    });
    await new Promise((res) => setTimeout(res, 700));
    await p.kill9();
    stop = true;
    await Promise.all(writers);
    // Whatever prefix the replica holds is a consistent one.
    const db = new Database(join(r.dataDir, 'strata.db'), { readonly: true });
    const row = db.prepare('SELECT message_count, token_count FROM conversations WHERE id = ?').get(conv) as { message_count: number; token_count: number };
    const n = (db.prepare('SELECT COUNT(*) AS n, MAX(seq) AS m FROM messages WHERE conversation_id = ?').get(conv) as { n: number; m: number });
    db.close();
    expect(n.n).toBe(row.message_count);
    expect(n.m).toBe(row.message_count);
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', `server.listen=${new URL(p.url).host}`] });
    running.push(p2);
    await caughtUp(r, p2);
    expect(tableHashes(r.dataDir)).toEqual(tableHashes(p2.dataDir));
  });

  it('synchronous billing answers once a replica has the entry, and 503 when none confirms in time', async () => {
    const p = await primary(['replication.sync_min_replicas=1', 'replication.sync_timeout_ms=1500']);
    await api(p, 'POST', '/v1/users', { id: 'b', email: 'b@example.com', tier: 'pro' });
    const r = await replica(p);
    await caughtUp(r, p);
    const entry = { user_id: 'b', kind: 'charge', amount_micros: 5, currency: 'EUR', ref: 'sync-1' };
    expect((await api(p, 'POST', '/v1/billing/entries', entry)).status).toBe(201);
    r.proc.kill('SIGSTOP');
    const late = await api(p, 'POST', '/v1/billing/entries', { ...entry, ref: 'sync-2' });
    expect(late.status).toBe(503);
    expect(late.body.error.message).toMatch(/no replica confirmed/);
    r.proc.kill('SIGCONT');
    // The retry with the same ref returns the committed entry once the replica has it.
    const retry = await api(p, 'POST', '/v1/billing/entries', { ...entry, ref: 'sync-2' });
    expect(retry.status).toBe(200);
    expect(retry.body.ref).toBe('sync-2');
  });

  it('promotion raises the epoch and fences the old primary: its writes are refused, then it follows', async () => {
    const p = await primary();
    await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    const epoch = (await status(p)).epoch as number;
    p.proc.kill('SIGSTOP');
    const promoted = await api(r, 'POST', '/v1/admin/promote');
    expect(promoted.body).toEqual({ epoch: epoch + 1 });
    expect((await api(r, 'POST', '/v1/users', { id: 'after', email: 'after@example.com', tier: 'free' })).status).toBe(201);
    p.proc.kill('SIGCONT');
    await expect
      .poll(async () => (await api(p, 'POST', '/v1/users', { email: `late${Math.random()}@example.com`, tier: 'free' })).status, { timeout: 10_000, interval: 100 })
      .toBe(409);
    const refused = await api(p, 'POST', '/v1/users', { email: 'x@example.com', tier: 'free' });
    expect(refused.body.error.code).toBe('read_only_replica');
    expect(refused.body.error.message).toContain(r.url);
    // The old primary follows the new one (bootstrapping away anything only it had).
    await expect.poll(async () => (await api(p, 'GET', '/v1/users/after')).status, { timeout: 20_000, interval: 200 }).toBe(200);
    expect((await status(p))).toMatchObject({ role: 'replica', epoch: epoch + 1 });
    expect((await status(r))).toMatchObject({ role: 'primary', epoch: epoch + 1 });
    expect((await api(r, 'POST', '/v1/admin/promote')).status).toBe(409);
    // The load-balancer checks follow the roles.
    const check = async (d: Daemon, path: string) => (await fetch(d.url + path)).status;
    expect([await check(r, '/primary'), await check(r, '/replica')]).toEqual([200, 503]);
    expect([await check(p, '/primary'), await check(p, '/replica')]).toEqual([503, 200]);
  });

  it('a new primary refuses the feed to a replica holding a tail of the old epoch it never had, even once it has written past it; a replica serves no feed', async () => {
    const p = await primary();
    await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    const fork = (await status(r)).lsn as number;
    p.proc.kill('SIGSTOP');
    expect((await api(r, 'POST', '/v1/admin/promote')).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await api(r, 'POST', '/v1/users', { email: `new${i}@example.com`, tier: 'free' })).status).toBe(201);
    const feed = (after: number, epoch: number, d: Daemon = r) => api(d, 'GET', `/v1/replication/changes?store=main&after=${after}&epoch=${epoch}`);
    // The old primary's replica that got two records more than r before the fail: behind r's
    // newest LSN, yet its tail is not r's. 0.9.0 served it from `after` on (silent divergence).
    const divergent = await feed(fork + 2, 1);
    expect(divergent.status).toBe(409);
    expect(divergent.body.error.message).toMatch(new RegExp(`left that epoch at LSN ${fork}`));
    // Up to the fork, the log is shared: served.
    expect((await feed(fork, 1)).status).toBe(200);
    expect((await feed(fork + 2, 2)).status).toBe(200);
    // A caller of a newer epoch than this node's is not served either (this node was replaced).
    expect((await feed(fork, 3)).status).toBe(503);
    // The paused old primary, once fenced, is a replica: it serves neither feed nor snapshot.
    p.proc.kill('SIGCONT');
    await expect.poll(async () => (await status(p)).role, { timeout: 20_000, interval: 100 }).toBe('replica');
    const refused = await feed(0, 2, p);
    expect(refused.status).toBe(503);
    expect(refused.body.error.message).toContain('this node is a replica');
    expect((await api(p, 'GET', '/v1/replication/snapshot?store=main')).status).toBe(503);
  });

  it('a fenced primary killed before its bootstrap finished still bootstraps after a restart, keeping its tail in a rollback file', async () => {
    const { startTcpProxy } = await import('../helpers/tcp-proxy.js');
    const p = await primary();
    await seed(p, 'a');
    // The replica is reached (by the fenced primary's bootstrap) only through a proxy that can be cut.
    const port = await (await import('../helpers/redis.js')).freePort();
    const proxy = await startTcpProxy(port);
    try {
      const r = await replica(p, [`server.listen=127.0.0.1:${port}`, `replication.advertise_url=http://127.0.0.1:${proxy.port}`]);
      await caughtUp(r, p);
      r.proc.kill('SIGSTOP');
      // The first may still reach r (its long-poll was waiting at p); the later ones cannot.
      for (const id of ['ponly1', 'ponly2', 'ponly3']) expect((await api(p, 'POST', '/v1/users', { id, email: `${id}@example.com`, tier: 'free' })).status).toBe(201);
      p.proc.kill('SIGSTOP');
      r.proc.kill('SIGCONT');
      expect((await api(r, 'POST', '/v1/admin/promote')).status).toBe(200);
      // r writes past p's LSN, so p is not "ahead" after its restart: only the mark makes it bootstrap.
      for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) expect((await api(r, 'POST', '/v1/users', { id, email: `${id}@example.com`, tier: 'free' })).status).toBe(201);
      proxy.cut();
      p.proc.kill('SIGCONT');
      // The fence notice reaches p (sent to its own URL); its bootstrap from r cannot.
      await expect.poll(() => p.output(), { timeout: 15_000, interval: 100 }).toMatch(/fenced by a newer primary/);
      await p.kill9();
      proxy.heal();
      const again = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', `replication.token=${p.adminToken}`] });
      running.push(again);
      await expect.poll(async () => (await api(again, 'GET', '/v1/users/r5')).status, { timeout: 20_000, interval: 200 }).toBe(200);
      // It holds what r holds, and nothing r lacks; what it lost is in a rollback file.
      for (const id of ['ponly1', 'ponly2', 'ponly3', 'r1']) expect((await api(again, 'GET', `/v1/users/${id}`)).status, id).toBe((await api(r, 'GET', `/v1/users/${id}`)).status);
      expect((await api(again, 'GET', '/v1/users/ponly3')).status).toBe(404);
      const rollbacks = (await api(again, 'GET', '/v1/admin/rollbacks')).body.files as Array<{ store: string; records: number }>;
      expect(rollbacks.filter((f) => f.store === 'main').reduce((n, f) => n + f.records, 0)).toBeGreaterThanOrEqual(2);
      expect(again.output()).toMatch(/discarded records only this node had/);
    } finally {
      await proxy.close();
    }
  });

  it('clients find the primary: GET /v1/replication/primary on either node, and 307 from a replica with redirect_writes', async () => {
    const p = await primary();
    const r = await replica(p, ['replication.redirect_writes=true']);
    await caughtUp(r, p);
    for (const d of [p, r]) {
      const found = await api(d, 'GET', '/v1/replication/primary');
      expect(found.status).toBe(200);
      expect(found.body).toMatchObject({ primary_url: p.url, epoch: (await status(p)).epoch, this_node: { role: d === p ? 'primary' : 'replica' } });
    }
    // A write sent to the replica: 307 to the same path and query on the primary...
    const body = JSON.stringify({ id: 'redirected', email: 'r@example.com', tier: 'free' });
    const headers = { authorization: `Bearer ${p.adminToken}`, 'content-type': 'application/json' };
    const first = await fetch(`${r.url}/v1/users?x=1`, { method: 'POST', headers, body, redirect: 'manual' });
    expect(first.status).toBe(307);
    expect(first.headers.get('location')).toBe(`${p.url}/v1/users?x=1`);
    expect(((await first.json()) as { error: { code: string } }).error.code).toBe('read_only_replica');
    // ...where the client sends the same method, body and token. (fetch, like curl -L, drops the
    // Authorization header when it follows a redirect to another origin: the README says so.)
    const followed = await fetch(first.headers.get('location')!, { method: 'POST', headers, body });
    expect(followed.status).toBe(201);
    expect((await api(p, 'GET', '/v1/users/redirected')).status).toBe(200);
    // Reads and the replica's own admin calls are served where they are sent.
    await caughtUp(r, p);
    expect((await api(r, 'GET', '/v1/users/redirected')).status).toBe(200);
    // Without the setting, the refusal stays a 409 naming the primary.
    const plain = await replica(p, ['node.id=replica-2'], tempDir());
    await caughtUp(plain, p);
    const refused = await api(plain, 'POST', '/v1/users', { email: 'y@example.com', tier: 'free' });
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toContain(p.url);
  });

  it('a restarted old primary acknowledges no write before it knows it was replaced: 0 acknowledged writes lost', async () => {
    const p = await primary();
    const conv = await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    await p.kill9();
    expect((await api(r, 'POST', '/v1/admin/promote')).status).toBe(200);
    // The same command line as before, as systemd would restart it.
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', `server.listen=${new URL(p.url).host}`, `replication.token=${p.adminToken}`] });
    running.push(p2);
    const acknowledged: string[] = [];
    const refused: number[] = [];
    const deadline = Date.now() + 3000;
    await Promise.all(
      Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; Date.now() < deadline; i++) {
          const content = `after-restart-${w}-${i}`;
          const res = await api(p2, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content }).catch(() => undefined);
          if (res?.status === 201) acknowledged.push(content);
          else if (res) refused.push(res.status);
        }
      }),
    );
    // 0.7.0 acknowledged 22 such writes and then discarded them.
    expect(acknowledged).toEqual([]);
    expect(refused.length).toBeGreaterThan(0);
    expect(new Set(refused)).toEqual(new Set(refused.filter((s) => s === 503 || s === 409)));
    expect(p2.output()).toMatch(/a newer primary exists: this node was replaced while it was down/);
    // It follows the new primary, whose writes it then serves.
    expect((await api(r, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'on the new primary' })).status).toBe(201);
    await expect.poll(async () => (await api(p2, 'GET', `/v1/conversations/${conv}/messages?limit=1000`)).body.items?.some((m: { content: string }) => m.content === 'on the new primary'), { timeout: 20_000 }).toBe(true);
    expect(await status(p2)).toMatchObject({ role: 'replica', epoch: (await status(r)).epoch });
  });

  it('a restarted primary whose replicas do not answer refuses writes until one does; confirm_epoch=false writes at once', async () => {
    const p = await primary();
    await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    await r.stop();
    await p.stop();
    const listen = `server.listen=${new URL(p.url).host}`;
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', listen] });
    running.push(p2);
    await new Promise((res) => setTimeout(res, 1500));
    const refused = await api(p2, 'POST', '/v1/users', { email: 'w@example.com', tier: 'free' });
    expect(refused.status).toBe(503);
    expect(refused.body.error.message).toMatch(/confirming epoch \d+ with its replicas \(replica-1\)/);
    expect((await api(p2, 'GET', '/v1/users/u-a')).status).toBe(200); // reads are served meanwhile
    // The replica comes back at its address, answers, and writes resume.
    const r2 = await startDaemon({ dataDir: r.dataDir, set: ['node.id=replica-1', 'replication.role=replica', `replication.primary_url=${p2.url}`, `replication.token=${p.adminToken}`, `server.listen=${new URL(r.url).host}`] });
    running.push(r2);
    await expect.poll(async () => (await api(p2, 'POST', '/v1/users', { email: `w${Math.random()}@example.com`, tier: 'free' })).status, { timeout: 15_000, interval: 200 }).toBe(201);
    await p2.stop();
    await r2.stop();
    // The documented override, for a deliberate start without the replicas.
    const p3 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', listen, 'replication.confirm_epoch=false'] });
    running.push(p3);
    expect((await api(p3, 'POST', '/v1/users', { email: 'solo@example.com', tier: 'free' })).status).toBe(201);
    await p3.stop();
    // A replica retired for good is forgotten instead: from then on the primary asks nobody.
    const p4 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', listen] });
    running.push(p4);
    expect((await api(p4, 'POST', '/v1/users', { email: 'w4@example.com', tier: 'free' })).status).toBe(503);
    expect((await api(p4, 'POST', '/v1/admin/replicas/replica-1/forget')).body).toEqual({ forgotten: true, node_id: 'replica-1' });
    await expect.poll(async () => (await api(p4, 'POST', '/v1/users', { email: `w${Math.random()}@example.com`, tier: 'free' })).status, { timeout: 10_000 }).toBe(201);
    expect((await api(p4, 'POST', '/v1/admin/replicas/replica-1/forget')).status).toBe(404);
  });

  it('with two replicas, a restarted old primary waits for every one: the one still following it does not confirm it', async () => {
    const p = await primary();
    await p.stop();
    running.splice(running.indexOf(p), 1);
    const listen = `server.listen=${new URL(p.url).host}`;
    const p1 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', listen, `replication.token=${p.adminToken}`] });
    running.push(p1);
    const conv = await seed(p1, 'a');
    const r1 = await replica(p1, ['node.id=replica-1']);
    const r2 = await replica(p1, ['node.id=replica-2'], tempDir());
    await caughtUp(r1, p1);
    await caughtUp(r2, p1);
    await p1.kill9();
    expect((await api(r1, 'POST', '/v1/admin/promote')).status).toBe(200);
    r1.proc.kill('SIGSTOP'); // the new primary is out of reach; r2 still follows the old one
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', listen, `replication.token=${p.adminToken}`] });
    running.push(p2);
    const acknowledged: string[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await api(p2, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: `m${i}` });
      if (res.status === 201) acknowledged.push(`m${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // In the review, r2's "epoch 1" confirmed p1 after a few seconds: 565 writes, all lost.
    expect(acknowledged).toEqual([]);
    r1.proc.kill('SIGCONT');
    await expect.poll(async () => (await status(p2)).role, { timeout: 15_000 }).toBe('replica');
    expect((await status(p2)).epoch).toBe((await status(r1)).epoch);
  });

  it('a primary remembers a replica from its snapshot request on, so a restart asks it before writing', async () => {
    // A replica is caught up once its snapshot is installed; the primary used to learn of it only
    // from its first change-feed request, so a primary killed in between restarted as if it had
    // no replica that could have been promoted.
    const p = await primary();
    const snap = await fetch(`${p.url}/v1/replication/snapshot?store=main&node_id=replica-9&url=${encodeURIComponent('http://127.0.0.1:9')}`, { headers: { authorization: `Bearer ${p.adminToken}` } });
    expect(snap.status).toBe(200);
    await snap.arrayBuffer();
    await p.kill9();
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1'] });
    running.push(p2);
    await expect.poll(() => p2.output()).toMatch(/"replicas":\["http:\/\/127\.0\.0\.1:9"\],"msg":"started as primary: confirming the epoch/);
    expect((await api(p2, 'POST', '/v1/users', { id: 'X', email: 'x@example.com', tier: 'free' })).status).toBe(503);
    expect((await api(p2, 'POST', '/v1/admin/replicas/replica-9/forget')).status).toBe(200);
    await expect.poll(async () => (await api(p2, 'POST', '/v1/users', { id: 'X', email: 'x@example.com', tier: 'free' })).status).toBe(201);
  });

  it('a promotion survives a restart with the old replica command line, and the old primary then follows it', async () => {
    const p = await primary();
    await seed(p, 'a');
    const r = await replica(p);
    await caughtUp(r, p);
    await p.kill9();
    expect((await api(r, 'POST', '/v1/admin/promote')).status).toBe(200);
    expect((await api(r, 'POST', '/v1/users', { id: 'W', email: 'w@example.com', tier: 'free' })).status).toBe(201);
    await r.kill9();
    // The same replica command line as before the promotion.
    const r2 = await startDaemon({
      dataDir: r.dataDir,
      set: ['node.id=replica-1', 'replication.role=replica', `replication.primary_url=${p.url}`, `replication.token=${p.adminToken}`, `server.listen=${new URL(r.url).host}`],
    });
    running.push(r2);
    expect(r2.output()).toMatch(/this node was promoted at its current epoch: it starts as primary/);
    expect((await status(r2)).role).toBe('primary');
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', `server.listen=${new URL(p.url).host}`, `replication.token=${p.adminToken}`] });
    running.push(p2);
    try {
      await expect.poll(async () => (await api(p2, 'GET', '/v1/users/W')).status, { timeout: 20_000 }).toBe(200);
    } catch (err) {
      throw new Error(`the old primary never followed (${String(err)}); its log:\n${p2.output()}\nthe promoted node's log:\n${r2.output()}`);
    }
    expect((await api(r2, 'GET', '/v1/users/W')).status).toBe(200);
    expect(await status(p2)).toMatchObject({ role: 'replica', primary: r2.url });
    // Fenced, it stays a replica across its own restart too.
    await p2.stop();
    const p3 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', `server.listen=${new URL(p.url).host}`, `replication.token=${p.adminToken}`] });
    running.push(p3);
    expect(p3.output()).toMatch(/fenced by a newer primary: it starts as its replica/);
    expect((await status(p3)).role).toBe('replica');
  });

  it('copies model blobs to a replica that does not share the object tier, before the records that reference them', async () => {
    const p = await primary();
    const h = { authorization: `Bearer ${p.adminToken}` };
    const upload = async (version: string, data: Buffer) => {
      await api(p, 'POST', '/v1/models/m/versions', { version });
      const sha = createHash('sha256').update(data).digest('hex');
      const up = await fetch(`${p.url}/v1/models/m/versions/${version}/files/w.bin`, { method: 'PUT', headers: { ...h, 'x-content-sha256': sha }, body: data });
      expect(up.status).toBeLessThan(300);
    };
    await api(p, 'PUT', '/v1/models/m', {});
    const before = randomBytes(300_000);
    await upload('v1', before);
    // The replica has its own data dir, so its own fs object tiers.
    const r = await replica(p);
    await caughtUp(r, p);
    const after = randomBytes(200_000);
    await upload('v2', after);
    await caughtUp(r, p);
    for (const [v, data] of [['v1', before], ['v2', after]] as const) {
      const got = await fetch(`${r.url}/v1/models/m/versions/${v}/files/w.bin`, { headers: h });
      expect(got.status, v).toBe(200);
      expect(Buffer.from(await got.arrayBuffer()).equals(data), v).toBe(true);
    }
    expect(r.output()).toMatch(/copied a blob from the primary/);
  });
});

