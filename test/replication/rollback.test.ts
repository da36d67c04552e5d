import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, runCli, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';

// A former primary that rejoins discards what only it had (an asynchronous store's acknowledged
// writes the promoted replica never received) — into a rollback file, never silently.

const running: Daemon[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) {
    d.proc.kill('SIGCONT');
    await d.stop().catch(() => undefined);
  }
});

const status = async (d: Daemon) => (await api(d, 'GET', '/v1/admin/status')).body;

describe('rollback files', () => {
  it('keep the acknowledged writes a rejoining primary discards, listed, counted and readable (sealed fields opened)', async () => {
    const key = join(tempDir('strata-key-'), 'master.key');
    writeFileSync(key, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    const enc = ['encryption.enabled=true', `encryption.master_key_file=${key}`];
    const p = await startDaemon({ set: ['node.id=primary-1', ...enc] });
    running.push(p);
    await api(p, 'POST', '/v1/users', { id: 'u1', email: 'u1@example.com', tier: 'pro' });
    const conv = (await api(p, 'POST', '/v1/conversations', { user_id: 'u1' })).body.id as string;
    const dir = tempDir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'admin.token'), p.adminToken + '\n');
    const r = await startDaemon({ dataDir: dir, set: ['node.id=replica-1', 'replication.role=replica', `replication.primary_url=${p.url}`, `replication.token=${p.adminToken}`, ...enc] });
    running.push(r);
    await expect.poll(async () => (await status(r)).lsn === (await status(p)).lsn, { timeout: 20_000 }).toBe(true);

    // The replica stops hearing; the primary acknowledges five messages only it will ever have.
    r.proc.kill('SIGSTOP');
    for (let i = 0; i < 5; i++) expect((await api(p, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: `only-on-the-old-primary-${i}` })).status).toBe(201);
    await p.kill9();
    r.proc.kill('SIGCONT');
    expect((await api(r, 'POST', '/v1/admin/promote')).status).toBe(200);

    // The old primary comes back, learns it was replaced, follows, and keeps what it discards.
    const p2 = await startDaemon({ dataDir: p.dataDir, set: ['node.id=primary-1', `server.listen=${new URL(p.url).host}`, `replication.token=${p.adminToken}`, ...enc] });
    running.push(p2);
    await expect.poll(async () => (await status(p2)).role, { timeout: 20_000 }).toBe('replica');
    await expect.poll(async () => (await api(p2, 'GET', '/v1/admin/rollbacks')).body.files?.length ?? 0, { timeout: 20_000 }).toBeGreaterThan(0);
    const [file, ...others] = (await api(p2, 'GET', '/v1/admin/rollbacks')).body.files as Array<{ file: string; store: string; epoch: number; first_lsn: number; last_lsn: number; records: number }>;
    expect(others).toEqual([]);
    expect(file).toMatchObject({ store: 'main', epoch: (await status(r)).epoch });
    expect(file!.records).toBeGreaterThan(0);
    expect(file!.file).toBe(`main-${file!.epoch}-${file!.first_lsn}-${file!.last_lsn}.msgpack`);
    expect(p2.output()).toMatch(/"records":\d+.*discarded records only this node had/);
    expect(await (await fetch(`${p2.url}/metrics`)).text()).toContain(`strata_rollback_records_total{store="main"} ${file!.records}`);
    // The rejoined node now holds exactly the new primary's messages. (A change the replica had
    // already been sent when it was paused may have reached it: that one is kept, not rolled back.)
    const contents = async (d: Daemon) => ((await api(d, 'GET', `/v1/conversations/${conv}/messages?last=50`)).body.items as Array<{ content: string }>).map((m) => m.content);
    const kept = await contents(r);
    await expect.poll(() => contents(p2), { timeout: 10_000 }).toEqual(kept);

    // On disk the contents stay sealed; `strata rollback show` opens them with the node's keys.
    const path = join(p.dataDir, 'rollback', file!.file);
    expect(readFileSync(path).includes('only-on-the-old-primary')).toBe(false);
    const shown = await runCli(['rollback', 'show', path, '--set', `storage.data_dir=${p.dataDir}`, ...enc.flatMap((s) => ['--set', s])]);
    expect(shown.code, shown.err).toBe(0);
    const lines = shown.out.trim().split('\n').map((l) => JSON.parse(l) as { lsn: number; engine: string; op: string; payload: { messages?: Array<{ content: string }> } });
    const rolledBack = lines.filter((l) => l.engine === 'conversations' && l.op === 'append').flatMap((l) => l.payload.messages!.map((m) => m.content));
    // Every acknowledged message is on the new primary or in the rollback file, never both, never neither.
    expect([...kept, ...rolledBack].sort()).toEqual(Array.from({ length: 5 }, (_, i) => `only-on-the-old-primary-${i}`));
    expect(rolledBack.length).toBeGreaterThan(0);
    expect(shown.err).toMatch(/main record\(s\).*primary-1/);
    // Without the key, the file still reads, sealed.
    const bare = await runCli(['rollback', 'show', path]);
    expect(bare.code).toBe(0);
    expect(bare.out).not.toContain('only-on-the-old-primary');
    expect(bare.out).toContain('enc1:');
    expect((await runCli(['rollback', 'show', join(p.dataDir, 'strata.db')])).code).toBe(1);
  });
});
