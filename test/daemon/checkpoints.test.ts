import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

describe('checkpoints', () => {
  let d: Daemon;
  const files: Record<number, Buffer> = {};
  beforeAll(async () => {
    d = await startDaemon({ set: ['checkpoints.keep_last=2'] });
    for (let step = 100; step <= 500; step += 100) {
      files[step] = randomBytes(10_000 + step);
      const r = await fetch(`${d.url}/v1/runs/run-1/checkpoints/${step}/files/model/state.pt`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${d.adminToken}` },
        body: files[step],
      });
      expect(r.status).toBe(201);
    }
  });
  afterAll(async () => {
    await d.stop();
  });

  it('stores files per step and lists steps newest first with sizes and tier', async () => {
    const list = (await api(d, 'GET', '/v1/runs/run-1/checkpoints')).body.items;
    expect(list.map((c: any) => c.step)).toEqual([500, 400, 300, 200, 100]);
    expect(list[0]).toMatchObject({ files: 1, bytes: 10_500, tier: 'hot' });
    const back = await fetch(`${d.url}/v1/runs/run-1/checkpoints/300/files/model/state.pt`, { headers: { authorization: `Bearer ${d.adminToken}`, range: 'bytes=0-9' } });
    expect(back.status).toBe(206);
    expect(Buffer.from(await back.arrayBuffer()).equals(files[300]!.subarray(0, 10))).toBe(true);
    expect((await api(d, 'GET', '/v1/runs/nope/checkpoints')).status).toBe(404);
    expect((await api(d, 'GET', '/v1/runs/run-1/checkpoints/-1/files/x')).status).toBe(400);
  });

  it('retention keeps the last K hot and archives the rest; archived steps still read', async () => {
    expect((await api(d, 'POST', '/v1/admin/checkpoints/retention')).body).toEqual({ archived: 3, deleted: 0 });
    const list = (await api(d, 'GET', '/v1/runs/run-1/checkpoints')).body.items;
    expect(list.map((c: any) => [c.step, c.tier])).toEqual([
      [500, 'hot'],
      [400, 'hot'],
      [300, 'archive'],
      [200, 'archive'],
      [100, 'archive'],
    ]);
    const back = await fetch(`${d.url}/v1/runs/run-1/checkpoints/100/files/model/state.pt`, { headers: { authorization: `Bearer ${d.adminToken}` } });
    expect(Buffer.from(await back.arrayBuffer()).equals(files[100]!)).toBe(true);
    expect((await api(d, 'POST', '/v1/admin/checkpoints/retention')).body).toEqual({ archived: 0, deleted: 0 });
  });
});

describe('checkpoint deletion after N days', () => {
  it('deletes old steps past keep_last, and GC then frees their blobs', async () => {
    const t = await openTestNode();
    try {
      const actor = { tokenId: 'test' };
      for (const step of [1, 2, 3]) {
        await t.node.checkpoints.putFile(actor, 'r', step, 'w.bin', (async function* () {
          yield randomBytes(1000);
        })());
      }
      const later = Date.now() + 40 * 86_400_000;
      expect(await t.node.checkpoints.applyRetention(actor, { keep_last: 1, archive_older: true, delete_after_days: 30 }, later)).toEqual({ archived: 0, deleted: 2 });
      expect(t.node.checkpoints.list('r').items.map((c) => c.step)).toEqual([3]);
      const gc = await t.node.models.gc.collect(actor, 0);
      expect(gc.unreferenced_blobs).toBe(2);
    } finally {
      await t.close();
    }
  });
});
