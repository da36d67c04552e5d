import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../helpers/daemon.js';
import { startS3rver } from '../helpers/s3rver.js';

// The daemon with its hot tier on S3 (s3rver, in-process): uploads go through explicit
// multipart, reads through the NVMe cache.

describe('model store on an S3 hot tier', () => {
  let s3: Awaited<ReturnType<typeof startS3rver>>;
  let d: Daemon;
  beforeAll(async () => {
    s3 = await startS3rver([]);
    d = await startDaemon({
      set: [
        'objects.hot.driver=s3',
        'objects.hot.endpoint=127.0.0.1',
        `objects.hot.port=${s3.port}`,
        'objects.hot.use_ssl=false',
        'objects.hot.bucket=strata-hot',
        'objects.hot.access_key=S3RVER',
        'objects.hot.secret_key=S3RVER',
        'objects.hot.part_size_bytes=5242880',
      ],
    });
  });
  afterAll(async () => {
    await d.stop();
    await s3.close();
  });

  it('uploads a multi-part file, then serves it cold (miss) and warm (hit), with ranges', async () => {
    const h = { authorization: `Bearer ${d.adminToken}` };
    await api(d, 'PUT', '/v1/models/s', {});
    await api(d, 'POST', '/v1/models/s/versions', { version: 'v1' });
    const data = randomBytes(12 * 1024 * 1024 + 3);
    const sha = createHash('sha256').update(data).digest('hex');
    const up = await fetch(d.url + '/v1/models/s/versions/v1/files/w.bin', { method: 'PUT', headers: { ...h, 'x-content-sha256': sha }, body: data });
    expect(up.status).toBe(201);
    const before = (await api(d, 'GET', '/v1/cache')).body;
    const cold = await fetch(d.url + '/v1/models/s/versions/v1/files/w.bin', { headers: h });
    expect(Buffer.from(await cold.arrayBuffer()).equals(data)).toBe(true);
    const warm = await fetch(d.url + '/v1/models/s/versions/v1/files/w.bin', { headers: { ...h, range: `bytes=${data.length - 5}-` } });
    expect(warm.status).toBe(206);
    expect(Buffer.from(await warm.arrayBuffer()).equals(data.subarray(data.length - 5))).toBe(true);
    const after = (await api(d, 'GET', '/v1/cache')).body;
    expect(after.misses).toBe(before.misses + 1);
    expect(after.hits).toBe(before.hits + 1);
    const bad = await fetch(d.url + '/v1/models/s/versions/v1/files/bad.bin', { method: 'PUT', headers: { ...h, 'x-content-sha256': 'c'.repeat(64) }, body: randomBytes(6 * 1024 * 1024) });
    expect(bad.status).toBe(400);
    expect((await api(d, 'GET', '/v1/models/s/versions/v1')).body.files).toHaveLength(1);
  });
});
