import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { api, CLI, startDaemon, tempDir } from '../helpers/daemon.js';

describe('strata token create', () => {
  it('creates a working token offline, printed once on stdout', async () => {
    const dir = tempDir();
    const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'token', 'create', '--set', `storage.data_dir=${dir}`, ...args], { encoding: 'utf8' });
    const admin = run('--role', 'admin', '--name', 'ops');
    expect(admin.status, admin.stderr).toBe(0);
    const token = admin.stdout.trim();
    expect(token).toMatch(/^strata_/);
    expect(admin.stderr).toMatch(/created token tok_\S+ \(role admin\)/);
    // The first use of an empty data dir also left the initial admin token, mode 0600.
    expect(statSync(join(dir, 'admin.token')).mode & 0o777).toBe(0o600);

    expect(run('--role', 'wizard').status).toBe(2);
    const noUser = run('--role', 'user');
    expect(noUser.status).toBe(2);
    expect(noUser.stderr).toContain('needs a user_id');

    const d = await startDaemon({ dataDir: dir });
    try {
      expect((await api({ url: d.url, adminToken: token }, 'GET', '/v1/admin/status')).status).toBe(200);
      const audit = (await api(d, 'GET', '/v1/admin/audit')).body.items;
      expect(audit.find((e: any) => e.token_id === 'cli')).toMatchObject({ action: 'tokens.create' });
    } finally {
      await d.stop();
    }
  });
});
