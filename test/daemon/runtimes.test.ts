import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { api, runtimeCommand, startDaemon, type Runtime } from '../helpers/daemon.js';

// Smoke tests: the same built daemon under Bun (bun:sqlite) and Deno (node:sqlite) serves a
// write and a read, and a restart keeps the write. Both runtimes come from npm devDependencies,
// so they are always installed by `npm ci`; a missing binary is a failure, not a skip.

const drivers: Record<Exclude<Runtime, 'node'>, string> = { bun: 'bun:sqlite', deno: 'node:sqlite' };

describe.each(Object.entries(drivers) as Array<[Exclude<Runtime, 'node'>, string]>)('under %s', (runtime, driver) => {
  it('serves a write and a read, and keeps the write across a restart', async () => {
    expect(existsSync(runtimeCommand(runtime)[0]!), `${runtime} binary from npm`).toBe(true);
    const d = await startDaemon({ runtime });
    const created = await api(d, 'POST', '/v1/users', { id: 'smoke', email: 'smoke@example.com', tier: 'free' });
    expect(created.status, d.output()).toBe(201);
    await api(d, 'PUT', '/v1/users/smoke/preferences', { lang: 'fr' });
    expect((await api(d, 'GET', '/v1/users/smoke')).body.email).toBe('smoke@example.com');
    const status = (await api(d, 'GET', '/v1/admin/status')).body;
    expect(status.storage.sql_driver).toBe(driver);
    expect((await api(d, 'GET', '/v1/admin/audit/verify')).body.ok).toBe(true);
    expect(await d.stop()).toBe(0);

    const again = await startDaemon({ runtime, dataDir: d.dataDir });
    try {
      expect((await api(again, 'GET', '/v1/users/smoke/preferences')).body).toEqual({ lang: 'fr' });
    } finally {
      await again.stop();
    }
  });
});
