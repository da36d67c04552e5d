import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function blobFiles(d: Daemon): string[] {
  try {
    return readdirSync(join(d.dataDir, 'objects', 'hot', 'blobs'));
  } catch {
    return [];
  }
}

describe('model store over HTTP', () => {
  let d: Daemon;
  const auth = () => ({ authorization: `Bearer ${d.adminToken}` });
  const put = (path: string, body: Buffer, headers: Record<string, string> = {}) =>
    fetch(d.url + path, { method: 'PUT', headers: { ...auth(), ...headers }, body });

  beforeAll(async () => {
    d = await startDaemon();
    expect((await api(d, 'PUT', '/v1/models/llama', { description: 'test model', tags: ['chat'] })).status).toBe(201);
    expect((await api(d, 'PUT', '/v1/models/llama', { description: 'updated' })).status).toBe(200);
    expect((await api(d, 'POST', '/v1/models/llama/versions', { version: 'v1', metadata: { params: '8B' } })).status).toBe(201);
    expect((await api(d, 'POST', '/v1/models/llama/versions', { version: 'v1' })).status).toBe(409);
    expect((await api(d, 'POST', '/v1/models/llama/versions', { version: 'v9', metadata: { notes: 'x'.repeat(70_000) } })).body.error.message).toMatch(/metadata is limited to 64 KiB/);
  });
  afterAll(async () => {
    await d.stop();
  });

  it('streams an upload, checks X-Content-Sha256, and serves it back with ETag and length', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const res = await put('/v1/models/llama/versions/v1/files/weights/model-00001.safetensors', data, { 'x-content-sha256': sha(data) });
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ path: 'weights/model-00001.safetensors', size: data.length, sha256: sha(data) });
    const get = await fetch(d.url + '/v1/models/llama/versions/v1/files/weights/model-00001.safetensors', { headers: auth() });
    expect(get.status).toBe(200);
    expect(get.headers.get('etag')).toBe(`"${sha(data)}"`);
    expect(get.headers.get('accept-ranges')).toBe('bytes');
    expect(get.headers.get('content-length')).toBe(String(data.length));
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
    const head = await fetch(d.url + '/v1/models/llama/versions/v1/files/weights/model-00001.safetensors', { method: 'HEAD', headers: auth() });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(data.length));
    const version = (await api(d, 'GET', '/v1/models/llama/versions/v1')).body;
    expect(version).toMatchObject({ version: 'v1', state: 'open', metadata: { params: '8B' } });
    expect(version.files).toEqual([{ path: 'weights/model-00001.safetensors', size: data.length, sha256: sha(data) }]);
  });

  it('a sha256 mismatch is a 400 and keeps nothing', async () => {
    const before = blobFiles(d).length;
    const res = await put('/v1/models/llama/versions/v1/files/bad.bin', Buffer.from('some bytes'), { 'x-content-sha256': '0'.repeat(64) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.code).toBe('invalid_input');
    expect(blobFiles(d).length).toBe(before);
    expect((await api(d, 'GET', '/v1/models/llama/versions/v1/files/bad.bin')).status).toBe(404);
    expect((await put('/v1/models/llama/versions/v1/files/x.bin', Buffer.from('x'), { 'x-content-sha256': 'nothex' })).status).toBe(400);
  });

  it('stores identical content once across versions and models', async () => {
    const data = randomBytes(100_000);
    await api(d, 'POST', '/v1/models/llama/versions', { version: 'v2' });
    await api(d, 'PUT', '/v1/models/other', {});
    await api(d, 'POST', '/v1/models/other/versions', { version: 'a' });
    const before = blobFiles(d).length;
    for (const p of ['/v1/models/llama/versions/v1/files/tok.json', '/v1/models/llama/versions/v2/files/tok.json', '/v1/models/other/versions/a/files/t.json']) {
      expect((await put(p, data)).status).toBe(201);
    }
    expect(blobFiles(d).length).toBe(before + 1);
    const back = await fetch(d.url + '/v1/models/other/versions/a/files/t.json', { headers: auth() });
    expect(Buffer.from(await back.arrayBuffer()).equals(data)).toBe(true);
  });

  it('serves single ranges: first byte, last byte, open-ended, suffix; 416 past the end', async () => {
    const data = randomBytes(1000);
    await put('/v1/models/llama/versions/v1/files/r.bin', data);
    const range = async (r: string) => {
      const res = await fetch(d.url + '/v1/models/llama/versions/v1/files/r.bin', { headers: { ...auth(), range: r } });
      return { status: res.status, cr: res.headers.get('content-range'), body: Buffer.from(await res.arrayBuffer()) };
    };
    expect(await range('bytes=0-0')).toEqual({ status: 206, cr: 'bytes 0-0/1000', body: data.subarray(0, 1) });
    expect(await range('bytes=999-999')).toEqual({ status: 206, cr: 'bytes 999-999/1000', body: data.subarray(999) });
    expect(await range('bytes=900-')).toEqual({ status: 206, cr: 'bytes 900-999/1000', body: data.subarray(900) });
    expect(await range('bytes=-10')).toEqual({ status: 206, cr: 'bytes 990-999/1000', body: data.subarray(990) });
    expect(await range('bytes=990-5000')).toEqual({ status: 206, cr: 'bytes 990-999/1000', body: data.subarray(990) });
    // If-Range: the range only for the file the client names (strong ETag); the whole file otherwise.
    const sha = createHash('sha256').update(data).digest('hex');
    const conditional = async (ifRange: string) => {
      const res = await fetch(d.url + '/v1/models/llama/versions/v1/files/r.bin', { headers: { ...auth(), range: 'bytes=0-9', 'if-range': ifRange } });
      return { status: res.status, length: (await res.arrayBuffer()).byteLength };
    };
    expect(await conditional(`"${sha}"`)).toEqual({ status: 206, length: 10 });
    expect(await conditional('"another-file"')).toEqual({ status: 200, length: 1000 });
    expect(await conditional(`W/"${sha}"`)).toEqual({ status: 200, length: 1000 });
    expect(await conditional('Tue, 01 Dec 2026 10:00:00 GMT')).toEqual({ status: 200, length: 1000 });
    const past = await range('bytes=1000-1001');
    expect(past.status).toBe(416);
    expect(past.cr).toBe('bytes */1000');
  });

  it('refuses path traversal with 400', async () => {
    const { hostname, port } = new URL(d.url);
    for (const p of ['..%2F..%2Fetc%2Fpasswd', 'a/%2e%2e/b', 'a/../b', '../../../etc/passwd', 'a/./b', 'a%00b', '%2Fabs', 'a%5Cb']) {
      const out = await new Promise<string>((resolve) => {
        const s = connect(Number(port), hostname, () =>
          s.end(`PUT /v1/models/llama/versions/v1/files/${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`),
        );
        let o = '';
        s.on('data', (c) => (o += c.toString()));
        s.on('close', () => resolve(o));
      });
      expect(out, p).toMatch(/^HTTP\/1\.1 400/);
      expect(out).toContain('invalid_input');
    }
  });

  it('a finalized version refuses writes with 409', async () => {
    await api(d, 'POST', '/v1/models/llama/versions', { version: 'v3' });
    await put('/v1/models/llama/versions/v3/files/a.bin', Buffer.from('a'));
    expect((await api(d, 'POST', '/v1/models/llama/versions/v3/finalize')).body).toEqual({ version: 'v3', state: 'final' });
    const res = await put('/v1/models/llama/versions/v3/files/a.bin', Buffer.from('b'));
    expect(res.status).toBe(409);
    expect(((await res.json()) as any).error.code).toBe('conflict');
    const back = await fetch(d.url + '/v1/models/llama/versions/v3/files/a.bin', { headers: auth() });
    expect(await back.text()).toBe('a');
  });

  it('aliases resolve in paths and keep a history of who moved them', async () => {
    expect((await api(d, 'PUT', '/v1/models/llama/aliases/production', { version: 'v1' })).status).toBe(200);
    expect((await api(d, 'PUT', '/v1/models/llama/aliases/production', { version: 'v3' })).body).toMatchObject({ previous: 'v1', version: 'v3' });
    expect((await api(d, 'GET', '/v1/models/llama/versions/production')).body.version).toBe('v3');
    const model = (await api(d, 'GET', '/v1/models/llama')).body;
    expect(model.aliases).toEqual({ production: 'v3' });
    expect(model.alias_history.map((h: any) => [h.version, h.previous])).toEqual([
      ['v3', 'v1'],
      ['v1', null],
    ]);
    expect(model.alias_history[0].token_id).toMatch(/^tok_/);
    expect((await api(d, 'PUT', '/v1/models/llama/aliases/production', { version: 'nope' })).status).toBe(404);
    expect((await api(d, 'PUT', '/v1/models/llama/aliases/v2', { version: 'v1' })).status).toBe(409);
  });

  it('rollouts split keys by weight and stick', async () => {
    expect((await api(d, 'PUT', '/v1/models/llama/rollout', { variants: [{ version: 'v1', weight: 50 }, { version: 'v2', weight: 40 }] })).status).toBe(400);
    expect((await api(d, 'PUT', '/v1/models/llama/rollout', { variants: [{ version: 'v1', weight: 80 }, { version: 'v2', weight: 20 }] })).status).toBe(200);
    const counts: Record<string, number> = {};
    const first: Record<string, string> = {};
    for (let i = 0; i < 400; i++) {
      const v = (await api(d, 'GET', `/v1/models/llama/rollout/resolve?key=user-${i}`)).body.version;
      counts[v] = (counts[v] ?? 0) + 1;
      first[i] = v;
    }
    expect(counts.v1! / 400).toBeGreaterThan(0.7);
    expect(counts.v2! / 400).toBeGreaterThan(0.12);
    for (let i = 0; i < 50; i++) expect((await api(d, 'GET', `/v1/models/llama/rollout/resolve?key=user-${i}`)).body.version).toBe(first[i]);
  });

  it('a reader can download but not upload', async () => {
    const reader = (await api(d, 'POST', '/v1/admin/tokens', { name: 'r', role: 'reader' })).body.token;
    const res = await fetch(d.url + '/v1/models/llama/versions/v1/files/r.bin', { headers: { authorization: `Bearer ${reader}` } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const up = await fetch(d.url + '/v1/models/llama/versions/v1/files/z.bin', { method: 'PUT', headers: { authorization: `Bearer ${reader}` }, body: 'z' });
    expect(up.status).toBe(403);
  });

  it('serves through the model cache; prefetch and pinned aliases make files local', async () => {
    const before = (await api(d, 'GET', '/v1/cache')).body;
    expect(before.capacity_bytes).toBeGreaterThan(0);
    await api(d, 'POST', '/v1/models/llama/versions', { version: 'v9' });
    const data = randomBytes(50_000);
    await put('/v1/models/llama/versions/v9/files/w.bin', data);
    const get = async () => Buffer.from(await (await fetch(d.url + '/v1/models/llama/versions/v9/files/w.bin', { headers: auth() })).arrayBuffer());
    expect((await get()).equals(data)).toBe(true);
    // The cold read streamed while the cache filled; the next one is a hit once the fill is verified.
    await expect.poll(async () => (await api(d, 'GET', '/v1/cache')).body.entries).toBe(before.entries + 1);
    expect((await get()).equals(data)).toBe(true);
    const after = (await api(d, 'GET', '/v1/cache')).body;
    expect(after.misses).toBe(before.misses + 1);
    expect(after.hits).toBe(before.hits + 1);
    // A HEAD answers from the registry and opens nothing (hono runs the GET handler for it: each
    // one read the file through the cache, and under Bun leaked a FileHandle that crashed it).
    for (let i = 0; i < 5; i++) {
      const head = await fetch(d.url + '/v1/models/llama/versions/v9/files/w.bin', { method: 'HEAD', headers: { ...auth(), range: 'bytes=0-9' } });
      expect(head.status).toBe(206);
      expect(head.headers.get('content-length')).toBe('10');
    }
    expect((await api(d, 'GET', '/v1/cache')).body.hits).toBe(after.hits);
    // Moving the pinned alias prefetches: the next read of a new version is a hit.
    await api(d, 'POST', '/v1/models/llama/versions', { version: 'v10' });
    await put('/v1/models/llama/versions/v10/files/w2.bin', randomBytes(40_000));
    expect((await api(d, 'PUT', '/v1/models/llama/aliases/production', { version: 'v10' })).status).toBe(200);
    for (let i = 0; i < 50 && (await api(d, 'GET', '/v1/cache')).body.entries < after.entries + 1; i++) await new Promise((r) => setTimeout(r, 50));
    const pre = (await api(d, 'GET', '/v1/cache')).body;
    await (await fetch(d.url + '/v1/models/llama/versions/production/files/w2.bin', { headers: auth() })).arrayBuffer();
    expect((await api(d, 'GET', '/v1/cache')).body.hits).toBe(pre.hits + 1);
    expect((await api(d, 'POST', '/v1/models/llama/versions/v1/prefetch')).status).toBe(202);
    const metrics = await (await fetch(d.url + '/metrics')).text();
    expect(metrics).toMatch(/strata_model_cache_hits_total [1-9]/);
    expect(metrics).toMatch(/strata_model_cache_bytes [1-9]/);
    expect(metrics).toMatch(/strata_objects_bytes\{tier="hot"\} [1-9]/);
    expect(metrics).toMatch(/strata_object_transfer_bytes_total\{tier="hot",direction="in"\} [1-9]/);
    expect(metrics).toMatch(/strata_object_transfer_bytes_total\{tier="hot",direction="out"\} [1-9]/);
  });
});

describe('uploads and crashes', () => {
  it('kill -9 mid-upload leaves no visible file, and GC removes the orphan', async () => {
    const d = await startDaemon();
    await api(d, 'PUT', '/v1/models/m', {});
    await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' });
    const { hostname, port } = new URL(d.url);
    const sock = connect(Number(port), hostname);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.on('error', () => undefined);
    sock.write(`PUT /v1/models/m/versions/v1/files/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Length: 10000000\r\n\r\n`);
    sock.write(randomBytes(3_000_000));
    // Wait until the partial bytes are on disk, then kill.
    const tmp = join(d.dataDir, 'objects', 'hot', '.tmp');
    for (let i = 0; i < 100; i++) {
      try {
        if (readdirSync(tmp).length > 0) break;
      } catch {
        // not created yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await d.kill9();
    sock.destroy();
    expect(readdirSync(tmp).length).toBe(1);

    const again = await startDaemon({ dataDir: d.dataDir });
    try {
      expect((await api(again, 'GET', '/v1/models/m/versions/v1/files/big.bin')).status).toBe(404);
      expect((await api(again, 'GET', '/v1/models/m/versions/v1')).body.files).toEqual([]);
      // An orphan under blobs/ too, as a crash between the blob write and the commit leaves.
      const { writeFileSync, mkdirSync } = await import('node:fs');
      mkdirSync(join(d.dataDir, 'objects', 'hot', 'blobs'), { recursive: true });
      writeFileSync(join(d.dataDir, 'objects', 'hot', 'blobs', 'orphan-from-crash'), 'bytes');
      // Within the grace period nothing goes.
      expect((await api(again, 'POST', '/v1/admin/gc')).body).toMatchObject({ orphan_objects: 0, incomplete: 0 });
      const gc = (await api(again, 'POST', '/v1/admin/gc?grace_seconds=0')).body;
      expect(gc).toMatchObject({ orphan_objects: 1, incomplete: 1 });
      expect(readdirSync(tmp)).toEqual([]);
      // The emptied directory goes with its last object.
      expect(readdirSync(join(d.dataDir, 'objects', 'hot')).includes('blobs') ? readdirSync(join(d.dataDir, 'objects', 'hot', 'blobs')) : []).toEqual([]);
    } finally {
      await again.stop();
    }
  });

  it('GC keeps referenced blobs and removes ones no file points at', async () => {
    const d = await startDaemon();
    try {
      await api(d, 'PUT', '/v1/models/g', {});
      await api(d, 'POST', '/v1/models/g/versions', { version: 'v1' });
      const a = randomBytes(1000);
      const b = randomBytes(1000);
      await fetch(d.url + '/v1/models/g/versions/v1/files/f.bin', { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body: a });
      // Overwriting the path leaves blob a unreferenced.
      await fetch(d.url + '/v1/models/g/versions/v1/files/f.bin', { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body: b });
      const gc = (await api(d, 'POST', '/v1/admin/gc?grace_seconds=0')).body;
      expect(gc.unreferenced_blobs).toBe(1);
      const back = await fetch(d.url + '/v1/models/g/versions/v1/files/f.bin', { headers: { authorization: `Bearer ${d.adminToken}` } });
      expect(Buffer.from(await back.arrayBuffer()).equals(b)).toBe(true);
      expect(readdirSync(join(d.dataDir, 'objects', 'hot', 'blobs'))).toHaveLength(1);
    } finally {
      await d.stop();
    }
  });
});

describe('garbage collection racing uploads', () => {
  it('never deletes the bytes of content uploaded again while it runs, nor of an upload in flight', async () => {
    const t = await openTestNode();
    try {
      const h = { authorization: `Bearer ${t.adminToken}` };
      const put = (version: string, path: string, body: Buffer) => t.app.request(`/v1/models/g/versions/${version}/files/${path}`, { method: 'PUT', headers: h, body });
      await t.call('PUT', '/v1/models/g', {});
      for (const v of ['v2', 'v3']) await t.call('POST', '/v1/models/g/versions', { version: v });
      // 300 unreferenced blobs keep the collector busy; C is unreferenced last.
      for (let i = 0; i < 300; i++) await put('v2', 'junk', Buffer.from(`junk ${i}`));
      const c = randomBytes(10_000);
      await put('v2', 'x', c);
      await put('v2', 'x', Buffer.from('other'));
      const gc = t.call('POST', '/v1/admin/gc?grace_seconds=0');
      // While it runs, C is uploaded again (its row is reused) and a slow upload is in flight.
      await new Promise((r) => setTimeout(r, 50));
      expect((await put('v3', 'y', c)).status).toBe(201);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const slow = t.app.request('/v1/models/g/versions/v3/files/slow', {
        method: 'PUT',
        headers: h,
        body: new ReadableStream({
          async start(controller) {
            controller.enqueue(new Uint8Array(1000));
            await held;
            controller.enqueue(new Uint8Array(1000));
            controller.close();
          },
        }),
        duplex: 'half',
      } as RequestInit);
      expect((await gc).status).toBe(200);
      expect((await t.call('POST', '/v1/admin/gc?grace_seconds=0')).status).toBe(200);
      release();
      const slowRes = await slow;
      expect(slowRes.status, await slowRes.clone().text()).toBe(201);
      const y = await t.app.request('/v1/models/g/versions/v3/files/y', { headers: h });
      expect(y.status).toBe(200);
      expect(Buffer.from(await y.arrayBuffer()).equals(c)).toBe(true);
      expect((await t.app.request('/v1/models/g/versions/v3/files/slow', { headers: h })).status).toBe(200);
    } finally {
      await t.close();
    }
  });
});

describe('resumable uploads', () => {
  it('a part dropped mid-transfer is sent again and the upload completes with the right bytes', async () => {
    const d = await startDaemon();
    const h = { authorization: `Bearer ${d.adminToken}` };
    try {
      await api(d, 'PUT', '/v1/models/r', {});
      await api(d, 'POST', '/v1/models/r/versions', { version: 'v1' });
      const file = '/v1/models/r/versions/v1/files/shard-1.bin';
      const started = await fetch(d.url + file + '?uploads', { method: 'POST', headers: h });
      expect(started.status).toBe(201);
      const { upload_id } = (await started.json()) as { upload_id: string };
      const parts = [randomBytes(700_000), randomBytes(700_000), randomBytes(123)];
      const whole = Buffer.concat(parts);
      expect((await fetch(`${d.url}${file}?upload_id=${upload_id}&part=1`, { method: 'PUT', headers: h, body: parts[0] })).status).toBe(200);

      // Part 2: the connection drops halfway.
      const { hostname, port } = new URL(d.url);
      await new Promise<void>((resolve) => {
        const s = connect(Number(port), hostname, () => {
          s.write(`PUT ${file}?upload_id=${upload_id}&part=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Length: ${parts[1]!.length}\r\n\r\n`);
          s.write(parts[1]!.subarray(0, 300_000), () => setTimeout(() => s.destroy(), 100));
        });
        s.on('close', () => resolve());
        s.on('error', () => undefined);
      });
      const listed = (await api(d, 'GET', `/v1/models/r/uploads/${upload_id}/shard-1.bin`)).body;
      expect(listed.parts).toEqual([{ part: 1, size: 700_000, sha256: sha(parts[0]!) }]);
      // Resume: send part 2 again, then part 3, then complete.
      expect((await fetch(`${d.url}${file}?upload_id=${upload_id}&part=2`, { method: 'PUT', headers: h, body: parts[1] })).status).toBe(200);
      expect((await fetch(`${d.url}${file}?upload_id=${upload_id}&part=3`, { method: 'PUT', headers: h, body: parts[2] })).status).toBe(200);
      const done = await fetch(`${d.url}${file}?upload_id=${upload_id}`, { method: 'POST', headers: { ...h, 'x-content-sha256': sha(whole) } });
      expect(done.status).toBe(201);
      expect(await done.json()).toEqual({ path: 'shard-1.bin', size: whole.length, sha256: sha(whole) });
      const back = await fetch(d.url + file, { headers: h });
      expect(Buffer.from(await back.arrayBuffer()).equals(whole)).toBe(true);
      // The session is gone once complete.
      expect((await fetch(`${d.url}${file}?upload_id=${upload_id}`, { method: 'POST', headers: h })).status).toBe(404);
      expect((await fetch(`${d.url}${file}?upload_id=${upload_id}&part=0`, { method: 'PUT', headers: h, body: 'x' })).status).toBe(400);
    } finally {
      await d.stop();
    }
  });
});

describe('expired upload sessions', () => {
  it('GC ends sessions older than the ttl and deletes their parts; a young session stays', async () => {
    const t = await openTestNode();
    const h = { authorization: `Bearer ${t.adminToken}` };
    await t.call('PUT', '/v1/models/u', {});
    await t.call('POST', '/v1/models/u/versions', { version: 'v1' });
    const start = async (path: string) => ((await (await t.app.request(`/v1/models/u/versions/v1/files/${path}?uploads`, { method: 'POST', headers: h })).json()) as { upload_id: string }).upload_id;
    const old = await start('old.bin');
    expect((await t.app.request(`/v1/models/u/versions/v1/files/old.bin?upload_id=${old}&part=1`, { method: 'PUT', headers: h, body: 'part one' })).status).toBe(200);
    const young = await start('young.bin');
    expect((await t.app.request(`/v1/models/u/versions/v1/files/young.bin?upload_id=${young}&part=1`, { method: 'PUT', headers: h, body: 'part one' })).status).toBe(200);
    // Age the first session by an hour.
    t.node.sql.db.prepare('UPDATE model_uploads SET created_at = ? WHERE id = ?').run(new Date(Date.now() - 3_600_000).toISOString(), old);
    const gc = await t.call('POST', '/v1/admin/gc?upload_ttl_seconds=1800');
    expect(gc.body).toMatchObject({ expired_uploads: 1 });
    expect((await t.app.request(`/v1/models/u/versions/v1/files/old.bin?upload_id=${old}`, { method: 'POST', headers: h })).status).toBe(404);
    const left: string[] = [];
    for await (const o of t.node.objectTiers.hot.list('uploads/')) left.push(o.key.split('/')[1]!);
    expect(left).toEqual([young]);
    const audit = (await t.call('GET', '/v1/admin/audit?limit=5')).body.items.map((e: { action: string }) => e.action);
    expect(audit).toContain('models.upload_expired');
    await t.close();
  });
});

describe('archive tier', () => {
  it('archiving moves blobs to the archive tier, evicts them, and reads still work', async () => {
    const d = await startDaemon();
    const h = { authorization: `Bearer ${d.adminToken}` };
    try {
      await api(d, 'PUT', '/v1/models/old', {});
      await api(d, 'POST', '/v1/models/old/versions', { version: 'v1' });
      await api(d, 'POST', '/v1/models/old/versions', { version: 'v2' });
      const only = randomBytes(20_000);
      const shared = randomBytes(10_000);
      await fetch(d.url + '/v1/models/old/versions/v1/files/only.bin', { method: 'PUT', headers: h, body: only });
      await fetch(d.url + '/v1/models/old/versions/v1/files/shared.bin', { method: 'PUT', headers: h, body: shared });
      await fetch(d.url + '/v1/models/old/versions/v2/files/shared.bin', { method: 'PUT', headers: h, body: shared });
      await (await fetch(d.url + '/v1/models/old/versions/v1/files/only.bin', { headers: h })).arrayBuffer();
      // The cold read streamed while filling; the entry is recorded once the fill is verified.
      await expect.poll(async () => (await api(d, 'GET', '/v1/cache')).body.entries).toBeGreaterThan(0);
      const entriesBefore = (await api(d, 'GET', '/v1/cache')).body.entries;
      const r = await api(d, 'POST', '/v1/models/old/versions/v1/archive');
      expect(r.body).toEqual({ version: 'v1', moved: 1, bytes: 20_000 }); // shared.bin stays hot for v2
      expect((await api(d, 'GET', '/v1/models/old/versions/v1')).body).toMatchObject({ state: 'final', archived: true });
      expect((await api(d, 'GET', '/v1/cache')).body.entries).toBe(entriesBefore - 1);
      expect(readdirSync(join(d.dataDir, 'objects', 'archive', 'blobs'))).toHaveLength(1);
      const back = await fetch(d.url + '/v1/models/old/versions/v1/files/only.bin', { headers: { ...h, range: 'bytes=100-199' } });
      expect(back.status).toBe(206);
      expect(Buffer.from(await back.arrayBuffer()).equals(only.subarray(100, 200))).toBe(true);
      const whole = await fetch(d.url + '/v1/models/old/versions/v1/files/shared.bin', { headers: h });
      expect(Buffer.from(await whole.arrayBuffer()).equals(shared)).toBe(true);
      const metrics = await (await fetch(d.url + '/metrics')).text();
      expect(metrics).toMatch(/strata_objects_bytes\{tier="archive"\} 20000/);
    } finally {
      await d.stop();
    }
  });
});
