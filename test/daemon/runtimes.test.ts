import { createHash, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { api, runtimeCommand, startDaemon, tempDir, type Runtime } from '../helpers/daemon.js';

// Smoke tests: the same built daemon under Bun (bun:sqlite) and Deno (node:sqlite) serves a
// write and a read, and a restart keeps the write. Both runtimes come from npm devDependencies,
// so they are always installed by `npm ci`; a missing binary is a failure, not a skip. The
// daemon runs with encryption on, so sealing (node:crypto), the tokenizer and the Parquet
// writer are exercised on each runtime too.

const drivers: Record<Exclude<Runtime, 'node'>, string> = { bun: 'bun:sqlite', deno: 'node:sqlite' };

describe.each(Object.entries(drivers) as Array<[Exclude<Runtime, 'node'>, string]>)('under %s', (runtime, driver) => {
  it('serves a write and a read, and keeps the write across a restart', async () => {
    expect(existsSync(runtimeCommand(runtime)[0]!), `${runtime} binary from npm`).toBe(true);
    const key = join(tempDir('strata-key-'), 'master.key');
    writeFileSync(key, randomBytes(32).toString('base64'));
    const set = ['encryption.enabled=true', `encryption.master_key_file=${key}`];
    const d = await startDaemon({ runtime, set });
    const created = await api(d, 'POST', '/v1/users', { id: 'smoke', email: 'smoke@example.com', tier: 'free' });
    expect(created.status, d.output()).toBe(201);
    await api(d, 'PUT', '/v1/users/smoke/preferences', { lang: 'fr' });
    const conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'smoke' })).body.id;
    expect((await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'bonjour' })).status).toBe(201);
    const h = { authorization: `Bearer ${d.adminToken}` };
    await api(d, 'PUT', '/v1/models/m', {});
    await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' });
    const weights = randomBytes(200_000);
    const up = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { method: 'PUT', headers: { ...h, 'x-content-sha256': createHash('sha256').update(weights).digest('hex') }, body: weights });
    expect(up.status, d.output()).toBe(201);
    const ranged = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { headers: { ...h, range: 'bytes=65530-70000' } });
    expect(Buffer.from(await ranged.arrayBuffer()).equals(weights.subarray(65530, 70001))).toBe(true);
    await api(d, 'POST', '/v1/datasets', { name: 'smoke' });
    await fetch(`${d.url}/v1/datasets/smoke/raw/a.jsonl`, { method: 'PUT', headers: h, body: '{"text":"Hello  world"}\n{"text":"hello world"}\n{"text":"another row"}' });
    const job = (await api(d, 'POST', '/v1/datasets/smoke/jobs', { steps: ['normalize', 'dedup', 'tokenize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 20_000 }).toBe('done');
    expect((await api(d, 'GET', `/v1/jobs/${job}`)).body.stats).toMatchObject({ rows_in: 3, rows_out: 2, duplicates: 1 });
    expect((await api(d, 'GET', '/v1/users/smoke')).body.email).toBe('smoke@example.com');
    // A long text goes to the text worker thread; a "__proto__" key is refused.
    const scan = await api(d, 'POST', '/v1/privacy/scan', { text: 'y'.repeat(100_000) + ' a@b.io' });
    expect(scan.body.findings).toEqual([{ type: 'email', start: 100_001, end: 100_007 }]);
    expect((await api(d, 'PUT', '/v1/users/smoke/preferences', JSON.parse('{"__proto__":{"x":1}}'))).status).toBe(400);
    const status = (await api(d, 'GET', '/v1/admin/status')).body;
    expect(status.storage.sql_driver).toBe(driver);
    expect((await api(d, 'GET', '/v1/admin/audit/verify')).body.ok).toBe(true);
    expect(await d.stop()).toBe(0);

    const again = await startDaemon({ runtime, dataDir: d.dataDir, set });
    try {
      expect((await api(again, 'GET', '/v1/users/smoke/preferences')).body).toEqual({ lang: 'fr' });
      expect((await api(again, 'GET', `/v1/conversations/${conv}/messages`)).body.items[0].content).toBe('bonjour');
    } finally {
      await again.stop();
    }
  });
});
