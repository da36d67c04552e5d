import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { api, runCli, startDaemon } from '../helpers/daemon.js';

// strata drill: restore the latest backup into a scratch dir, serve it, read every engine.

const drill = (dataDir: string) => runCli(['drill', '--set', `storage.data_dir=${dataDir}`]);

describe('strata drill', () => {
  it('restores, serves and probes every engine; the daemon exports its last success; a damaged backup fails it', async () => {
    const d = await startDaemon({ set: ['backup.segment_seconds=0.2'] });
    const h = { authorization: `Bearer ${d.adminToken}` };
    expect((await api(d, 'POST', '/v1/users', { id: 'u1', email: 'u1@example.com', tier: 'pro' })).status).toBe(201);
    const conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'u1' })).body.id as string;
    expect((await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'hello' })).status).toBe(201);
    await api(d, 'POST', '/v1/collections', { name: 'docs', dimensions: 3, metric: 'cos' });
    expect((await api(d, 'POST', '/v1/collections/docs/upsert', { vectors: [{ id: 'a', values: [1, 0, 0] }, { id: 'b', values: [0, 1, 0] }] })).status).toBe(200);
    await api(d, 'PUT', '/v1/models/m', {});
    await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' });
    const put = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { method: 'PUT', headers: h, body: randomBytes(10_000) });
    expect(put.status).toBe(201);
    await api(d, 'POST', '/v1/billing/entries', { user_id: 'u1', kind: 'charge', amount_micros: 100, currency: 'USD', ref: 'r1' });
    expect((await api(d, 'POST', '/v1/admin/backups')).status).toBe(202);
    await new Promise((r) => setTimeout(r, 500));
    await api(d, 'GET', '/v1/admin/backups'); // ships what is committed

    // Beside the running daemon, as the timer runs it.
    const ok = await drill(d.dataDir);
    expect(ok.code, ok.err).toBe(0);
    const report = JSON.parse(ok.out);
    expect(report).toMatchObject({ ok: true, problems: [], blobs: { referenced: 1, verified: 1 } });
    for (const probe of ['readyz', 'audit_chain', 'users', 'conversations', 'vectors:docs', 'models', 'billing']) expect(report.probes[probe], probe).toEqual({ ok: true });
    expect(report.duration_seconds).toBeGreaterThan(0);
    expect(ok.err).toMatch(/drill: ok in/);
    // A node configured for automatic failover drills too: the copy it serves is a lone primary
    // (before, its start refused failover: auto with the lease turned off for the drill).
    const auto = await runCli(['drill', '--set', `storage.data_dir=${d.dataDir}`, '--set', 'replication.failover=auto', '--set', 'replication.lease.enabled=true']);
    expect(auto.code, auto.err).toBe(0);
    // The drill touched nothing of the live node's files, and the node exports the result.
    expect((await api(d, 'GET', '/v1/users/u1')).status).toBe(200);
    await d.stop();
    const again = await startDaemon({ dataDir: d.dataDir });
    try {
      await expect
        .poll(async () => (await api(again, 'GET', '/metrics', undefined, null)).body as string, { timeout: 10_000 })
        .toMatch(/strata_drill_last_success_timestamp_seconds [1-9][\s\S]*strata_drill_duration_seconds [0-9.]*[1-9]/);
    } finally {
      await again.stop();
    }

    // A damaged snapshot: a non-zero exit naming the problem, no new success recorded.
    const snapRoot = join(d.dataDir, 'backups', 'snapshots', 'main');
    const before = readFileSync(join(d.dataDir, 'backups', 'status', 'drill.json'), 'utf8');
    for (const s of readdirSync(snapRoot)) {
      const f = join(snapRoot, s, 'db.sqlite');
      const b = readFileSync(f);
      b[b.length - 100] ^= 0xff;
      writeFileSync(f, b);
    }
    const bad = await drill(d.dataDir);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.out).problems.join()).toMatch(/does not match its manifest/);
    expect(readFileSync(join(d.dataDir, 'backups', 'status', 'drill.json'), 'utf8')).toBe(before);
  });
});
