import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { api, runCli, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';

// Continuous backup and point-in-time restore, through the real CLI against the backup
// directory a running daemon fills.

/** Runs the CLI without blocking this process (its keep-alive sockets to the daemon stay served). */
function strata(args: string[], dataDir: string) {
  return runCli([...args, '--set', `storage.data_dir=${dataDir}`]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function addUser(d: Daemon, id: string) {
  expect((await api(d, 'POST', '/v1/users', { id, email: `${id}@example.com`, tier: 'free' })).status).toBe(201);
}

async function shipped(d: Daemon) {
  // GET ships what is committed before it answers.
  const r = await api(d, 'GET', '/v1/admin/backups');
  expect(r.status).toBe(200);
  return r.body;
}

function users(dir: string): string[] {
  const db = new Database(join(dir, 'strata.db'), { readonly: true });
  try {
    return (db.prepare('SELECT id FROM users ORDER BY id').all() as Array<{ id: string }>).map((r) => r.id);
  } finally {
    db.close();
  }
}

describe('backups and point-in-time restore', () => {
  it('restores exactly the state at a chosen time, the latest state, and refuses a time before the first snapshot', async () => {
    const d = await startDaemon({ set: ['backup.segment_seconds=0.2'] });
    await sleep(300);
    const before = (await shipped(d)).window;
    expect(before).not.toBeNull();
    await addUser(d, 'alpha');
    await sleep(1100);
    const t1 = new Date().toISOString();
    await sleep(1100);
    await addUser(d, 'beta');
    await sleep(1100);
    const t2 = new Date().toISOString();
    await sleep(1100);
    await addUser(d, 'gamma');
    const listing = await shipped(d);
    expect(listing.snapshots.main.length).toBeGreaterThanOrEqual(1);
    expect(Date.parse(listing.window.to)).toBeGreaterThan(Date.parse(t2));

    const at1 = tempDir();
    const r1 = await strata(['restore', '--to', t1, '--target-dir', at1], d.dataDir);
    expect(r1.code, r1.err).toBe(0);
    expect(r1.err).toMatch(/restore: main: snapshot at LSN/);
    const at2 = tempDir();
    expect((await strata(['restore', '--to', t2, '--target-dir', at2], d.dataDir)).code).toBe(0);
    const latest = tempDir();
    const rl = await strata(['restore', '--to', 'latest', '--target-dir', latest], d.dataDir);
    expect(rl.code, rl.err).toBe(0);
    const summary = JSON.parse(rl.out) as { stores: Array<{ store: string; lsn: number }> };
    expect(summary.stores.find((s) => s.store === 'main')!.lsn).toBe((await api(d, 'GET', '/v1/admin/status')).body.lsn);

    expect(users(at1)).toEqual(['alpha']);
    expect(users(at2)).toEqual(['alpha', 'beta']);
    expect(users(latest)).toEqual(['alpha', 'beta', 'gamma']);
    // A restored directory is a data dir: a daemon serves it, with the tokens it had.
    writeFileSync(join(at2, 'admin.token'), d.adminToken + '\n');
    const served = await startDaemon({ dataDir: at2, set: ['backup.enabled=false'] });
    expect((await api(served, 'GET', '/v1/users/beta', undefined, d.adminToken)).status).toBe(200);
    expect((await api(served, 'GET', '/v1/users/gamma', undefined, d.adminToken)).status).toBe(404);
    await served.stop();

    const early = await strata(['restore', '--to', '2001-01-01T00:00:00Z', '--target-dir', tempDir()], d.dataDir);
    expect(early.code).toBe(1);
    expect(early.err).toMatch(/before the oldest snapshot/);
    await d.stop();
  });

  it('detects a torn or a conflicting duplicate segment and never applies it', async () => {
    const d = await startDaemon({ set: ['backup.segment_seconds=0.2'] });
    await sleep(300);
    await shipped(d);
    await addUser(d, 'one');
    await shipped(d);
    await d.stop();
    const segDir = join(d.dataDir, 'backups', 'segments', 'main');
    const segs = readdirSync(segDir).filter((f) => f.endsWith('.seg')).sort();
    const last = segs[segs.length - 1]!;
    const good = readFileSync(join(segDir, last));

    // Torn: the upload stopped half-way.
    writeFileSync(join(segDir, last), good.subarray(0, Math.floor(good.length / 2)));
    const torn = await strata(['restore', '--to', 'latest', '--target-dir', tempDir()], d.dataDir);
    expect(torn.code).toBe(1);
    expect(torn.err).toMatch(/cannot be decompressed|does not match its checksum/);

    // Duplicate: a second segment for the same LSN range with other contents.
    writeFileSync(join(segDir, last), good);
    const [range] = /^\d+-\d+/.exec(last)!;
    writeFileSync(join(segDir, `${range}-${'f'.repeat(32)}.seg`), good);
    const dup = await strata(['restore', '--to', 'latest', '--target-dir', tempDir()], d.dataDir);
    expect(dup.code).toBe(1);
    expect(dup.err).toMatch(/two different segments claim|does not match its checksum/);
  });

  it('backup verify restores into a scratch dir, checks integrity, and fails on a damaged snapshot', async () => {
    const d = await startDaemon({ set: ['backup.segment_seconds=0.2'] });
    await addUser(d, 'v');
    await sleep(300);
    await shipped(d);
    await d.stop();
    const ok = await strata(['backup', 'verify'], d.dataDir);
    expect(ok.code, ok.err).toBe(0);
    const report = JSON.parse(ok.out);
    expect(report).toMatchObject({ ok: true, problems: [] });
    expect(report['strata.db'].users).toBe(1);
    // The daemon exports the last verification.
    const again = await startDaemon({ dataDir: d.dataDir });
    await expect.poll(async () => /strata_backup_verify_last_success_timestamp_seconds [1-9]/.test((await api(again, 'GET', '/metrics', undefined, null)).body), { timeout: 5000 }).toBe(true);
    await again.stop();

    const snapRoot = join(d.dataDir, 'backups', 'snapshots', 'main');
    for (const s of readdirSync(snapRoot)) {
      const f = join(snapRoot, s, 'db.sqlite');
      const b = readFileSync(f);
      b[b.length - 100] ^= 0xff;
      writeFileSync(f, b);
    }
    const bad = await strata(['backup', 'verify'], d.dataDir);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.out).problems.join()).toMatch(/does not match its manifest/);
  });

  it('snapshots carry the vector index files, so a restored node starts without rebuilding them', async () => {
    const d = await startDaemon({ set: ['backup.segment_seconds=0.2'] });
    await api(d, 'POST', '/v1/collections', { name: 'docs', dimensions: 3, metric: 'cos' });
    await api(d, 'POST', '/v1/collections/docs/upsert', { vectors: [{ id: 'a', values: [1, 0, 0] }, { id: 'b', values: [0, 1, 0] }] });
    expect((await api(d, 'POST', '/v1/admin/backups')).status).toBe(202);
    await expect.poll(async () => (await shipped(d)).snapshots.main.some((m: { indexes?: string[] }) => m.indexes?.includes('docs.usearch')), { timeout: 10_000 }).toBe(true);
    // Written after the snapshot: replayed onto the restored index from the segments.
    await api(d, 'POST', '/v1/collections/docs/upsert', { vectors: [{ id: 'c', values: [0, 0, 1] }] });
    await shipped(d);
    await d.stop();
    const dir = tempDir();
    expect((await strata(['restore', '--to', 'latest', '--target-dir', dir], d.dataDir)).code).toBe(0);
    writeFileSync(join(dir, 'admin.token'), d.adminToken + '\n');
    const served = await startDaemon({ dataDir: dir, set: ['backup.enabled=false'] });
    const q = await api(served, 'POST', '/v1/collections/docs/query', { vector: [0, 0, 1], top_k: 3 });
    expect(q.body.matches.map((m: { id: string }) => m.id)[0]).toBe('c');
    expect(q.body.matches).toHaveLength(3);
    expect(served.output()).not.toMatch(/rebuilding/);
    await served.stop();
  });

  it("a restored copy started on the source's object tier deletes nothing of the source's; --replace or adopt makes it the owner", async () => {
    const d = await startDaemon({ set: ['backup.segment_seconds=0.2'] });
    const h = { authorization: `Bearer ${d.adminToken}` };
    await api(d, 'PUT', '/v1/models/m', {});
    await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' });
    const upload = async (path: string) => {
      const body = Buffer.alloc(200_000, path);
      expect((await fetch(`${d.url}/v1/models/m/versions/v1/files/${path}`, { method: 'PUT', headers: h, body })).status).toBe(201);
    };
    await upload('before.bin');
    await shipped(d);
    const sourceCluster = (await api(d, 'GET', '/v1/admin/status')).body.storage.cluster_id as string;
    expect(sourceCluster).toMatch(/^[0-9a-f-]{36}$/);
    const dir = tempDir();
    const r = await strata(['restore', '--to', 'latest', '--target-dir', dir], d.dataDir);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/the copy is a new cluster/);
    // Written after the backup: to the restored copy these blobs are orphans.
    for (const f of ['after-1.bin', 'after-2.bin', 'after-3.bin']) await upload(f);
    const hot = join(d.dataDir, 'objects', 'hot');
    writeFileSync(join(dir, 'admin.token'), d.adminToken + '\n');
    // Configured like its source in everything that matters: the same hot tier, the same backup target.
    const copy = await startDaemon({ dataDir: dir, set: ['objects.hot.driver=fs', `objects.hot.path=${hot}`, 'backup.target.driver=fs', `backup.target.path=${join(d.dataDir, 'backups')}`, 'backup.segment_seconds=0.2'] });
    try {
      const status = (await api(copy, 'GET', '/v1/admin/status', undefined, d.adminToken)).body.storage;
      expect(status.tiers.hot).toMatchObject({ owned: false });
      expect(status.cluster_id).not.toBe(status.tiers.hot.owner_cluster_id);
      // 0.7.0 deleted the source's newer blobs here and broke its downloads.
      const gc = await api(copy, 'POST', '/v1/admin/gc?grace_seconds=0', undefined, d.adminToken);
      expect(gc.status).toBe(409);
      expect(gc.body.error.message).toMatch(/belongs to cluster .* does not delete from it/);
      // The source serves every file, and every blob is still on the shared tier.
      for (const f of ['before.bin', 'after-1.bin', 'after-2.bin', 'after-3.bin']) {
        expect((await fetch(`${d.url}/v1/models/m/versions/v1/files/${f}`, { headers: h })).status, f).toBe(200);
      }
      expect(readdirSync(join(hot, 'blobs'))).toHaveLength(4);
      // Nor does it ship its own history into the source's backups.
      await api(copy, 'POST', '/v1/users', { id: 'only-on-copy', email: 'copy@example.com', tier: 'free' }, d.adminToken);
      expect((await api(copy, 'POST', '/v1/admin/backups', undefined, d.adminToken)).status).toBe(202);
      await sleep(800);
      await expect.poll(() => copy.output()).toMatch(/does not write backups to it; give this node its own backup.target/);
      const check = tempDir();
      expect((await strata(['restore', '--to', 'latest', '--target-dir', check], d.dataDir)).code).toBe(0);
      expect(users(check)).not.toContain('only-on-copy');
      // Taken over on purpose (the source is gone for good), the copy collects what it does not reference.
      const adopted = await api(copy, 'POST', '/v1/admin/tiers/hot/adopt', undefined, d.adminToken);
      expect(adopted.status).toBe(200);
      expect((await api(copy, 'GET', '/v1/admin/audit?limit=5', undefined, d.adminToken)).body.items.map((e: { action: string }) => e.action)).toContain('objects.adopt_tier');
      expect((await api(copy, 'POST', '/v1/admin/gc?grace_seconds=0', undefined, d.adminToken)).body.orphan_objects).toBe(3);
    } finally {
      await copy.stop();
      await d.stop();
    }
    // --replace keeps the identity: the restored node owns what its source owned.
    const same = tempDir();
    const replaced = await strata(['restore', '--to', 'latest', '--target-dir', same, '--replace'], d.dataDir);
    expect(replaced.code, replaced.err).toBe(0);
    expect(JSON.parse(replaced.out).replaced).toBe(true);
    expect(JSON.parse(replaced.out).cluster_id).toBe(sourceCluster);
    expect(JSON.parse(r.out).cluster_id).not.toBe(sourceCluster);
    // A restore that did not finish leaves its marker, and such a data dir is never served.
    expect(readdirSync(same)).not.toContain('RESTORE-IN-PROGRESS');
    writeFileSync(join(same, 'RESTORE-IN-PROGRESS'), 'killed\n');
    const refused = await runCli(['serve', '--set', `storage.data_dir=${same}`, '--set', 'server.listen=127.0.0.1:0']);
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/holds an unfinished restore \(RESTORE-IN-PROGRESS\)/);
  });
});
