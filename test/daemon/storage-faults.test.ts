import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';

// What a full disk, a blob deleted behind the daemon's back and a client that stops reading
// do to a real daemon process. Each fault costs the request that meets it, never the process
// or another client.

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MiB = 1024 * 1024;

/** A tmpfs of `size` at a fresh directory (root only; CI runs as root). */
function smallDisk(size: string): { dir: string; unmount(): void } | undefined {
  if (process.getuid?.() !== 0) {
    if (process.env.CI === 'true') throw new Error('the full-disk tests need root to mount a tmpfs');
    return undefined;
  }
  const dir = tempDir('strata-tmpfs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return { dir, unmount: () => execFileSync('umount', ['-l', dir]) };
}

async function upload(d: Daemon, model: string, path: string, body: Buffer): Promise<{ status: number; body: any }> {
  const res = await fetch(`${d.url}/v1/models/${model}/versions/v1/files/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function download(d: Daemon, model: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`${d.url}/v1/models/${model}/versions/v1/files/${path}`, { headers: { authorization: `Bearer ${d.adminToken}`, ...headers } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

function tmpFiles(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

async function metric(d: Daemon, line: RegExp): Promise<number> {
  const text = await (await fetch(`${d.url}/metrics`)).text();
  const m = text.split('\n').find((l) => line.test(l));
  return m ? Number(m.slice(m.lastIndexOf(' ') + 1)) : 0;
}

describe('a full disk', () => {
  const disk = smallDisk('64m');
  let d: Daemon;
  beforeAll(async () => {
    if (!disk) return;
    d = await startDaemon({ dataDir: join(disk.dir, 'data') });
    await api(d, 'PUT', '/v1/models/m', {});
    await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' });
  });
  afterAll(async () => {
    await d?.stop();
    disk?.unmount();
  });

  it.skipIf(!disk)('a 100 MiB upload onto 64 MiB gets 507 with a clear message, leaves no temp file, and the daemon lives on', async () => {
    const r = await upload(d, 'm', 'big.bin', randomBytes(100 * MiB));
    expect(r.status).toBe(507);
    expect(r.body.error.code).toBe('insufficient_storage');
    expect(r.body.error.message).toMatch(/no space left/);
    expect(tmpFiles(join(d.dataDir, 'objects', 'hot', '.tmp'))).toEqual([]);
    expect((await fetch(`${d.url}/healthz`)).status).toBe(200);
    // The space came back with the temp file: writes work again at once.
    const small = randomBytes(MiB);
    expect((await upload(d, 'm', 'small.bin', small)).status).toBe(201);
    expect((await download(d, 'm', 'small.bin')).body.equals(small)).toBe(true);
  });

  it.skipIf(!disk)('with the disk full, a cold read is served from the object tier, writes get 507, and both recover when space is freed', async () => {
    const weights = randomBytes(8 * MiB);
    expect((await upload(d, 'm', 'weights.bin', weights)).status).toBe(201);
    // Fill the disk to the last byte.
    const filler = join(disk!.dir, 'filler');
    mkdirSync(filler);
    try {
      for (let i = 0; ; i++) writeFileSync(join(filler, String(i)), Buffer.alloc(MiB));
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    try {
      // 0.7.0 crashed here in the cache fill (an unhandled 'error' on its WriteStream).
      const cold = await download(d, 'm', 'weights.bin');
      expect(cold.status).toBe(200);
      expect(sha(cold.body)).toBe(sha(weights));
      await expect.poll(() => d.output()).toMatch(/model cache fill failed; reads of this file are served from the object tier/);
      const ranged = await download(d, 'm', 'weights.bin', { range: 'bytes=100-199' });
      expect(ranged.status).toBe(206);
      expect(ranged.body.equals(weights.subarray(100, 200))).toBe(true);
      const refused = await upload(d, 'm', 'more.bin', randomBytes(2 * MiB));
      expect(refused.status).toBe(507);
      expect(tmpFiles(join(d.dataDir, 'cache', 'models', '.tmp'))).toEqual([]);
    } finally {
      rmSync(filler, { recursive: true, force: true });
    }
    expect((await upload(d, 'm', 'more.bin', randomBytes(2 * MiB))).status).toBe(201);
    expect(sha((await download(d, 'm', 'weights.bin')).body)).toBe(sha(weights));
    expect(d.output()).not.toMatch(/Unhandled|uncaught/i);
    expect(d.proc.exitCode).toBeNull();
  });

  it.skipIf(!disk)('a snapshot for a replica on a full disk answers 507 and leaves no partial copy behind (review)', async () => {
    // A database worth copying, then a disk with less room than a copy takes.
    await api(d, 'POST', '/v1/users', { id: 'snap', email: 'snap@example.com', tier: 'free' });
    const filler = join(disk!.dir, 'filler3');
    mkdirSync(filler);
    try {
      for (let i = 0; ; i++) writeFileSync(join(filler, String(i)), Buffer.alloc(256 * 1024));
    } catch {
      // full
    }
    try {
      const r = await fetch(`${d.url}/v1/replication/snapshot?store=main`, { headers: { authorization: `Bearer ${d.adminToken}` } });
      expect(r.status).toBe(507);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('insufficient_storage');
      expect(readdirSync(d.dataDir).filter((f) => f.startsWith('.snapshot-'))).toEqual([]);
    } finally {
      rmSync(filler, { recursive: true, force: true });
    }
    const ok = await fetch(`${d.url}/v1/replication/snapshot?store=main`, { headers: { authorization: `Bearer ${d.adminToken}` } });
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
  });

  it.skipIf(!disk)('jobs, backups and shutdown on a full disk: each fails cleanly, leaves no scratch behind, and the listing still answers', async () => {
    await api(d, 'POST', '/v1/datasets', { name: 'ds' });
    const rows = Array.from({ length: 20_000 }, (_, i) => JSON.stringify({ text: `row ${i} ${'lorem ipsum '.repeat(8)}` })).join('\n');
    expect((await fetch(`${d.url}/v1/datasets/ds/raw/a.jsonl`, { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body: rows })).status).toBe(201);
    const job = (await api(d, 'POST', '/v1/datasets/ds/jobs', { steps: ['normalize', 'dedup', 'tokenize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 10_000, interval: 20 }).toBe('running');
    // The disk fills while the job runs.
    const filler = join(disk!.dir, 'filler2');
    mkdirSync(filler);
    try {
      for (let i = 0; ; i++) writeFileSync(join(filler, String(i)), Buffer.alloc(MiB));
    } catch {
      // full
    }
    try {
      await expect
        .poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 30_000 })
        .toBe('failed')
        .catch(async (err: unknown) => {
          // Seen stuck in `running` under Node 24 in 3 of 11 loaded runs (never since): say where.
          const log = d.output().split('\n').filter((l) => !l.includes('"msg":"request"')).slice(-30).join('\n');
          throw new Error(`${(err as Error).message}\njob: ${JSON.stringify((await api(d, 'GET', `/v1/jobs/${job}`)).body)}\n${log}`);
        });
      // The job's scratch database went with it (in review it stayed, with its file handles).
      expect(tmpFiles(join(d.dataDir, '.tmp'))).toEqual([]);
      const listing = await api(d, 'GET', '/v1/admin/backups');
      expect(listing.status).toBe(200);
      expect(listing.body.window).toBeDefined();
    } finally {
      rmSync(filler, { recursive: true, force: true });
    }
  });
});

describe('a shutdown on a full disk', () => {
  const disk = smallDisk('32m');
  it.skipIf(!disk)('exits 0 with every store closed, and the next start serves what was acknowledged', async () => {
    const d = await startDaemon({ dataDir: join(disk!.dir, 'data') });
    try {
      for (let i = 0; i < 20; i++) expect((await api(d, 'POST', '/v1/users', { id: `u${i}`, email: `u${i}@example.com`, tier: 'free' })).status).toBe(201);
      const filler = join(disk!.dir, 'filler');
      try {
        for (let i = 0; ; i++) writeFileSync(`${filler}${i}`, Buffer.alloc(256 * 1024));
      } catch {
        // full
      }
      // In review the WAL checkpoint failed here, the rest of the shutdown was skipped and the exit code was 1.
      expect(await d.stop()).toBe(0);
      for (const f of readdirSync(disk!.dir)) if (f.startsWith('filler')) rmSync(join(disk!.dir, f));
      const again = await startDaemon({ dataDir: d.dataDir });
      expect((await api(again, 'GET', '/v1/users/u19')).status).toBe(200);
      await again.stop();
    } finally {
      disk!.unmount();
    }
  });
});

describe('a blob missing from the object tier', () => {
  let d: Daemon;
  beforeAll(async () => {
    d = await startDaemon();
  });
  afterAll(() => d.stop());

  it('GET and HEAD answer 500 with the JSON error before any byte, counted as 500, logged by sha256, no handle leaked', async () => {
    await api(d, 'PUT', '/v1/models/gone', {});
    await api(d, 'POST', '/v1/models/gone/versions', { version: 'v1' });
    const data = randomBytes(3 * MiB);
    const put = await upload(d, 'gone', 'w.bin', data);
    expect(put.status).toBe(201);
    const blobs = join(d.dataDir, 'objects', 'hot', 'blobs');
    const [key] = readdirSync(blobs);
    renameSync(join(blobs, key!), join(d.dataDir, 'moved-away'));
    const fds = () => readdirSync(`/proc/${d.proc.pid}/fd`).filter((f) => {
      try {
        // Handles on blobs and cache files: what a missing blob leaked in 0.7.0. (Not the data
        // dir as a whole: the start-up backup and SQLite open and close files meanwhile.)
        const target = readlinkSync(`/proc/${d.proc.pid}/fd/${f}`);
        return target.includes(join(d.dataDir, 'objects')) || target.includes(join(d.dataDir, 'cache'));
      } catch {
        return false;
      }
    }).length;
    const before = fds();
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${d.url}/v1/models/gone/versions/v1/files/w.bin`, { headers: { authorization: `Bearer ${d.adminToken}` } });
      expect(res.status).toBe(500);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('internal');
      expect(body.error.message).toContain(put.body.sha256);
    }
    const head = await fetch(`${d.url}/v1/models/gone/versions/v1/files/w.bin`, { method: 'HEAD', headers: { authorization: `Bearer ${d.adminToken}` } });
    expect(head.status).toBe(500);
    expect(fds()).toBeLessThanOrEqual(before);
    expect(await metric(d, /^strata_objects_missing_total\{tier="hot"\}/)).toBeGreaterThanOrEqual(11);
    expect(await metric(d, /^strata_http_request_duration_seconds_count\{method="GET",route="\/v1\/models\/:model\/versions\/:version\/files\/:path\{\.\+\}",status="500"\}/)).toBe(10);
    await expect.poll(() => d.output()).toContain(`"key":"blobs/${key}"`);
    expect(d.output()).not.toMatch(/Closing file descriptor/);
    // Put back, the file is served again.
    renameSync(join(d.dataDir, 'moved-away'), join(blobs, key!));
    expect(sha((await download(d, 'gone', 'w.bin')).body)).toBe(sha(data));
  });

  it("an export whose archived conversation is gone answers 500 before any byte; a pipeline over a lost raw file fails naming the loss", async () => {
    await api(d, 'POST', '/v1/users', { id: 'ex', email: 'ex@example.com', tier: 'free' });
    const conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'ex' })).body.id;
    await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'hello' });
    // Archive it by hand-ageing the conversation past the free tier's hot window.
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(join(d.dataDir, 'strata.db'));
    db.prepare('UPDATE conversations SET updated_at = ? WHERE id = ?').run(new Date(Date.now() - 4 * 86_400_000).toISOString(), conv);
    db.close();
    expect((await api(d, 'POST', '/v1/admin/jobs/conversation-archive')).body.archived).toBe(1);
    const archived = join(d.dataDir, 'objects', 'archive', 'conversations', 'ex');
    rmSync(archived, { recursive: true });
    const exported = await api(d, 'GET', '/v1/users/ex/export');
    expect(exported.status).toBe(500);
    expect(exported.body.error.message).toMatch(/archived conversation are missing/);

    await api(d, 'POST', '/v1/datasets', { name: 'lost' });
    await fetch(`${d.url}/v1/datasets/lost/raw/a.jsonl`, { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body: '{"text":"x"}' });
    rmSync(join(d.dataDir, 'objects', 'hot', 'datasets', 'lost'), { recursive: true });
    const job = (await api(d, 'POST', '/v1/datasets/lost/jobs', { steps: ['normalize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 20_000 }).toBe('failed');
    expect((await api(d, 'GET', `/v1/jobs/${job}`)).body.error).toMatch(/raw file a.jsonl of lost are missing/);
  });

  it('a dataset shard gone from the tier is a 500 naming the loss, not a 404 saying the shard does not exist', async () => {
    await api(d, 'POST', '/v1/datasets', { name: 'ds' });
    await fetch(`${d.url}/v1/datasets/ds/raw/a.jsonl`, { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body: '{"text":"one"}\n{"text":"two"}' });
    const job = (await api(d, 'POST', '/v1/datasets/ds/jobs', { steps: ['normalize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 20_000 }).toBe('done');
    const [shard] = (await api(d, 'GET', '/v1/datasets/ds/versions/1')).body.shards as Array<{ name: string; path: string }>;
    rmSync(join(d.dataDir, 'objects', 'hot', ...shard!.path.split('/')));
    const res = await api(d, 'GET', `/v1/datasets/ds/versions/1/shards/${shard!.name}`);
    expect(res.status).toBe(500);
    expect(res.body.error.message).toMatch(/missing from the hot object tier; the operator has been alerted/);
    await expect.poll(() => d.output()).toContain(`"key":"${shard!.path}"`);
  });
});

describe('a client that stops reading', () => {
  let d: Daemon;
  beforeAll(async () => {
    d = await startDaemon();
  });
  afterAll(() => d.stop());

  it('holds up no other reader of the same file, cold or warm, whole or ranged', async () => {
    await api(d, 'PUT', '/v1/models/slow', {});
    await api(d, 'POST', '/v1/models/slow/versions', { version: 'v1' });
    const data = randomBytes(50 * MiB);
    expect((await upload(d, 'slow', 'w.bin', data)).status).toBe(201);
    // The stalled client causes the cache fill (a cold read), then never reads a byte.
    const url = new URL(d.url);
    const stalled: Socket = connect(Number(url.port), url.hostname);
    await new Promise((r) => stalled.once('connect', r));
    stalled.pause();
    stalled.write(`GET /v1/models/slow/versions/v1/files/w.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 300));
    try {
      const t0 = performance.now();
      const [whole, ranged] = await Promise.all([download(d, 'slow', 'w.bin'), download(d, 'slow', 'w.bin', { range: 'bytes=0-99' })]);
      expect(whole.status).toBe(200);
      expect(sha(whole.body)).toBe(sha(data));
      expect(ranged.status).toBe(206);
      expect(ranged.body.equals(data.subarray(0, 100))).toBe(true);
      // 0.7.0 served neither for as long as the first client did not read (20 s and more).
      expect(performance.now() - t0).toBeLessThan(10_000);
      // The fill finished at the tier's speed, whatever the stalled client does.
      await expect.poll(async () => (await api(d, 'GET', '/v1/cache')).body.entries, { timeout: 10_000 }).toBe(1);
    } finally {
      stalled.destroy();
    }
  });
});
