import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/redis.js';

// The HAProxy example in deploy/, run for real in front of a primary and a replica: the write
// address reaches the primary, the read address the replica, both chosen by the public
// /primary and /replica checks. Without haproxy the test skips, except under CI=true
// (.ci/run installs it).

const HAS_HAPROXY = spawnSync('haproxy', ['-v']).status === 0;
const EXAMPLE = join(import.meta.dirname, '../../deploy/haproxy/haproxy.cfg');
const running: Daemon[] = [];
const stops: Array<() => void> = [];
afterAll(async () => {
  for (const s of stops) s();
  for (const d of running) await d.stop();
});

describe('deploy/haproxy/haproxy.cfg', () => {
  it.skipIf(!HAS_HAPROXY && process.env.CI !== 'true')('routes writes to the primary and reads to the replica by their health checks', async () => {
    expect(HAS_HAPROXY, 'haproxy is required under CI (apt-get install haproxy)').toBe(true);
    expect(spawnSync('haproxy', ['-c', '-f', EXAMPLE]).status).toBe(0);
    const p = await startDaemon({ set: ['node.id=primary-1'] });
    running.push(p);
    const dir = tempDir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'admin.token'), p.adminToken + '\n');
    const r = await startDaemon({ dataDir: dir, set: ['node.id=replica-1', 'replication.role=replica', `replication.primary_url=${p.url}`, `replication.token=${p.adminToken}`] });
    running.push(r);
    // The example as shipped, with this test's ports and nodes in place of 10.0.0.x.
    const [writes, reads] = [await freePort(), await freePort()];
    const servers = [p, r].map((d, i) => `    server strata-${i + 1} ${new URL(d.url).host} check`).join('\n');
    const config = readFileSync(EXAMPLE, 'utf8')
      .replace('bind :7000', `bind 127.0.0.1:${writes}`)
      .replace('bind :7001', `bind 127.0.0.1:${reads}`)
      .replace('inter 2s', 'inter 200ms')
      .replace('inter 2s', 'inter 200ms')
      .replace(/(    server strata-\d .*\n)+/g, `${servers}\n`);
    const file = join(dir, 'haproxy.cfg');
    writeFileSync(file, config);
    const proxy = spawn('haproxy', ['-f', file, '-db'], { stdio: 'ignore' });
    stops.push(() => proxy.kill());
    const via = (port: number) => ({ url: `http://127.0.0.1:${port}`, adminToken: p.adminToken });
    await expect.poll(async () => (await api(via(writes), 'POST', '/v1/users', { id: 'through-haproxy', email: 'h@example.com', tier: 'free' }).catch(() => ({ status: 0 }))).status, { timeout: 15_000, interval: 200 }).toBe(201);
    // The read address reaches the replica once it has the write.
    await expect.poll(async () => (await api(via(reads), 'GET', '/v1/admin/status').catch(() => ({ status: 0, body: {} }))).body.role, { timeout: 15_000, interval: 200 }).toBe('replica');
    await expect.poll(async () => (await api(via(reads), 'GET', '/v1/users/through-haproxy')).status, { timeout: 15_000, interval: 200 }).toBe(200);
    // Writes never land on the replica: every write through the write address is the primary's.
    for (let i = 0; i < 5; i++) expect((await api(via(writes), 'GET', '/v1/admin/status')).body.role).toBe('primary');
  });
});
