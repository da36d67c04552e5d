import { randomUUID } from 'node:crypto';
import { QdrantClient } from '@qdrant/js-client-rest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../../../helpers/daemon.js';
import { freePort } from '../../../helpers/redis.js';

// The Qdrant-compatible API driven by @qdrant/js-client-rest, unmodified, configured only with
// its documented url and apiKey, over every call the issue names.

let d: Daemon;
let url: string;
let service: string;
let reader: string;
let user: string;

const client = (apiKey = service) => new QdrantClient({ url, apiKey, checkCompatibility: true });
const status = async (p: Promise<unknown>) => {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as { status?: number }).status ?? String(err);
  }
};

/** 2-d points on the unit circle at angle i·10°, so the nearest neighbours of an angle are known. */
const at = (deg: number) => [Math.cos((deg * Math.PI) / 180), Math.sin((deg * Math.PI) / 180)];

beforeAll(async () => {
  const port = await freePort();
  d = await startDaemon({ set: [`qdrant.listen=127.0.0.1:${port}`] });
  url = `http://127.0.0.1:${port}`;
  const token = async (role: string, extra: Record<string, unknown> = {}) => (await api(d, 'POST', '/v1/admin/tokens', { name: `q-${role}`, role, ...extra })).body.token as string;
  service = await token('service');
  reader = await token('reader');
  await api(d, 'POST', '/v1/users', { id: 'uq', email: 'uq@example.com', tier: 'free' });
  user = await token('user', { user_id: 'uq' });
  expect([service, reader, user].every((t) => typeof t === 'string')).toBe(true);
});
afterAll(() => d?.stop());

describe('Qdrant API with @qdrant/js-client-rest', () => {
  it('answers GET / with a version the client accepts, and refuses missing or unknown keys', async () => {
    const info = await client().versionInfo();
    expect(info.title).toMatch(/qdrant/);
    expect(info.version).toMatch(/^1\.18\./);
    expect(await status(new QdrantClient({ url }).getCollections())).toBe(401);
    expect(await status(client('nope').getCollections())).toBe(401);
    // A raw request with a bearer works too, and the envelope is Qdrant's.
    const r = await fetch(`${url}/collections`, { headers: { authorization: `Bearer ${service}` } });
    const body = (await r.json()) as { result: unknown; status: string; time: number };
    expect(body.status).toBe('ok');
    expect(typeof body.time).toBe('number');
    const missing = await fetch(`${url}/collections/nope`, { headers: { 'api-key': service } });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { status: { error: string } }).status.error).toMatch(/doesn't exist/);
  });

  it('creates, lists, describes and deletes collections (Cosine, Euclid, Dot, the unnamed "" form)', async () => {
    const q = client();
    expect(await q.createCollection('c-cos', { vectors: { size: 2, distance: 'Cosine' } })).toBe(true);
    expect(await q.createCollection('c-l2', { vectors: { size: 2, distance: 'Euclid' } })).toBe(true);
    expect(await q.createCollection('c-dot', { vectors: { '': { size: 2, distance: 'Dot' } } })).toBe(true);
    // The conflict LlamaIndex matches on.
    const dup = await fetch(`${url}/collections/c-cos`, { method: 'PUT', headers: { 'api-key': service, 'content-type': 'application/json' }, body: JSON.stringify({ vectors: { size: 2, distance: 'Cosine' } }) });
    expect(dup.status).toBe(409);
    expect(((await dup.json()) as { status: { error: string } }).status.error).toMatch(/already exists/);
    expect(await status(q.createCollection('c-bad', { vectors: { size: 2, distance: 'Manhattan' } }))).toBe(400);
    expect(await status(q.createCollection('Upper', { vectors: { size: 2, distance: 'Cosine' } }))).toBe(400);
    expect((await q.getCollections()).collections.map((c) => c.name)).toEqual(expect.arrayContaining(['c-cos', 'c-l2', 'c-dot']));
    expect((await q.collectionExists('c-cos')).exists).toBe(true);
    expect((await q.collectionExists('nope')).exists).toBe(false);
    const info = await q.getCollection('c-cos');
    expect(info).toMatchObject({ status: 'green', optimizer_status: 'ok', segments_count: 1, points_count: 0, payload_schema: {} });
    expect(info.config.params.vectors).toEqual({ size: 2, distance: 'Cosine' });
    expect(info.config.hnsw_config.m).toBeGreaterThan(0);
    expect(info.config.optimizer_config).toBeDefined();
    expect((await q.getCollection('c-dot')).config.params.vectors).toEqual({ '': { size: 2, distance: 'Dot' } });
    expect(await q.deleteCollection('c-dot')).toBe(true);
    expect((await q.collectionExists('c-dot')).exists).toBe(false);
    expect(await status(q.getCollection('c-dot'))).toBe(404);
  });

  it('creates and deletes payload indexes, shown in payload_schema', async () => {
    const q = client();
    const r = await q.createPayloadIndex('c-cos', { field_name: 'city', field_schema: 'keyword', wait: true });
    expect(r.status).toBe('completed');
    expect((await q.getCollection('c-cos')).payload_schema.city).toMatchObject({ data_type: 'keyword' });
    await q.deletePayloadIndex('c-cos', 'city', { wait: true });
    expect((await q.getCollection('c-cos')).payload_schema.city).toBeUndefined();
  });

  it('upserts points (list and batch forms, integer and UUID ids in any spelling), retrieves them and counts', async () => {
    const q = client();
    const uuid = randomUUID();
    const points = Array.from({ length: 36 }, (_, i) => ({ id: i, vector: at(i * 10), payload: { deg: i * 10, city: i % 3 === 0 ? 'Berlin' : i % 3 === 1 ? 'London' : 'Paris', tags: i % 2 ? ['odd'] : ['even'], meta: { source: `doc-${i % 4}`, page: i } } }));
    expect((await q.upsert('c-cos', { wait: true, points })).status).toBe('completed');
    await q.upsert('c-cos', { wait: true, batch: { ids: [uuid.replaceAll('-', '').toUpperCase()], vectors: [at(5)], payloads: [{ deg: 5, city: 'Rome', note: null, empty: [] }] } });
    expect((await q.count('c-cos', { exact: true })).count).toBe(37);
    const got = await q.retrieve('c-cos', { ids: [uuid, 3, 999], with_payload: true, with_vector: true });
    expect(got.map((p) => p.id).sort()).toEqual([3, uuid].sort());
    const three = got.find((p) => p.id === 3)!;
    expect(three.payload).toMatchObject({ deg: 30, city: 'Berlin' });
    expect((three.vector as number[])[0]).toBeCloseTo(Math.cos(Math.PI / 6), 5);
    // A payload key list keeps only those keys; a bad id is a 400.
    expect((await q.retrieve('c-cos', { ids: [3], with_payload: ['city'] }))[0]!.payload).toEqual({ city: 'Berlin' });
    expect(await status(q.retrieve('c-cos', { ids: ['not-a-uuid'] }))).toBe(400);
    expect(await status(q.upsert('c-cos', { wait: true, points: [{ id: 1, vector: [1, 2, 3] }] }))).toBe(400);
    expect(await status(q.upsert('c-cos', { wait: true, points: [{ id: -1, vector: [1, 0] }] }))).toBe(400);
    // Nothing of a refused batch was written.
    expect((await q.count('c-cos', { exact: true })).count).toBe(37);
  });

  it('searches nearest-first with Qdrant scores, filter, offset, score_threshold and with_payload/with_vector', async () => {
    const q = client();
    const hits = await q.search('c-cos', { vector: at(42), limit: 3, with_payload: true });
    expect(hits.map((h) => h.id)).toEqual([4, 5, 3]);
    expect(hits[0]!.score).toBeCloseTo(Math.cos((2 * Math.PI) / 180), 5);
    expect(hits[0]!.payload).toMatchObject({ city: 'London' });
    const filtered = await q.search('c-cos', { vector: at(42), limit: 3, with_payload: false, filter: { must: [{ key: 'city', match: { value: 'Paris' } }] } });
    expect(filtered.map((h) => h.id)).toEqual([5, 2, 8]);
    expect(filtered[0]!.payload).toBeUndefined();
    expect((await q.search('c-cos', { vector: at(42), limit: 2, offset: 1 })).map((h) => h.id)).toEqual([5, 3]);
    // cos 2° = 0.9994, cos 8° = 0.990, cos 12° = 0.978.
    expect((await q.search('c-cos', { vector: at(42), limit: 10, score_threshold: 0.98 })).map((h) => h.id)).toEqual([4, 5]);
    const withVector = await q.search('c-cos', { vector: at(0), limit: 1, with_vector: true });
    expect((withVector[0]!.vector as number[])[0]).toBeCloseTo(1, 5);
    const batch = await q.searchBatch('c-cos', { searches: [{ vector: at(0), limit: 1 }, { vector: at(180), limit: 1 }] });
    expect(batch.map((b) => b[0]!.id)).toEqual([0, 18]);
  });

  it('scores Euclid as the distance (ascending) and Dot as the dot product', async () => {
    const q = client();
    await q.upsert('c-l2', { wait: true, points: [{ id: 1, vector: [0, 0] }, { id: 2, vector: [3, 4] }, { id: 3, vector: [6, 8] }] });
    const hits = await q.search('c-l2', { vector: [0, 0], limit: 3 });
    expect(hits.map((h) => [h.id, Math.round(h.score * 1000) / 1000])).toEqual([[1, 0], [2, 5], [3, 10]]);
    expect((await q.search('c-l2', { vector: [0, 0], limit: 3, score_threshold: 5 })).map((h) => h.id)).toEqual([1, 2]);
    await q.createCollection('c-ip', { vectors: { size: 2, distance: 'Dot' } });
    await q.upsert('c-ip', { wait: true, points: [{ id: 1, vector: [1, 1] }, { id: 2, vector: [2, 3] }] });
    const ip = await q.search('c-ip', { vector: [1, 2], limit: 2 });
    expect(ip.map((h) => [h.id, Math.round(h.score * 1000) / 1000])).toEqual([[2, 8], [1, 3]]);
  });

  it('filters with must, should, must_not, min_should, any, except, text, range, has_id, is_empty, is_null and dotted keys', async () => {
    const q = client();
    const ids = async (filter: Record<string, unknown>) => (await q.scroll('c-cos', { filter, limit: 100, with_payload: false })).points.map((p) => p.id);
    expect(await ids({ must: [{ key: 'meta.source', match: { value: 'doc-1' } }] })).toEqual([1, 5, 9, 13, 17, 21, 25, 29, 33]);
    expect(await ids({ must: [{ key: 'city', match: { any: ['Rome', 'Berlin'] } }, { key: 'deg', range: { lt: 100 } }] })).toEqual([0, 3, 6, 9, expect.any(String)]);
    expect(await ids({ must: [{ key: 'tags', match: { value: 'odd' } }, { key: 'meta.page', range: { gte: 30 } }] })).toEqual([31, 33, 35]);
    expect(await ids({ should: [{ key: 'deg', range: { lte: 10 } }, { has_id: [35] }] })).toEqual([0, 1, 35, expect.any(String)]);
    expect(await ids({ must: [{ key: 'deg', range: { lt: 60 } }], must_not: [{ key: 'city', match: { except: ['Paris', 'Rome'] } }] })).toEqual([2, 5, expect.any(String)]);
    expect(await ids({ must: [{ key: 'city', match: { text: 'ndo' } }, { key: 'deg', range: { lt: 50 } }] })).toEqual([1, 4]);
    expect(await ids({ must: [{ is_null: { key: 'note' } }] })).toHaveLength(1);
    expect(await ids({ must: [{ is_empty: { key: 'empty' } }, { key: 'deg', range: { lt: 20 } }] })).toEqual([0, 1, expect.any(String)]);
    expect(await ids({ must_not: [{ is_empty: { key: 'meta' } }], must: [{ key: 'deg', range: { lt: 20 } }] })).toEqual([0, 1]);
    expect(await ids({ min_should: { conditions: [{ key: 'city', match: { value: 'Berlin' } }, { key: 'tags', match: { value: 'even' } }, { key: 'deg', range: { lt: 100 } }], min_count: 3 } })).toEqual([0, 6]);
    expect(await ids({ must: [{ key: 'meta[].source', match: { value: 'doc-2' } }, { key: 'deg', range: { lt: 100 } }] })).toEqual([2, 6]);
    // Refused, never widened: an unknown condition, a nested filter, a bad key.
    for (const bad of [{ must: [{ key: 'city', geo_radius: { center: { lat: 0, lon: 0 }, radius: 1 } }] }, { must: [{ nested: { key: 'meta', filter: {} } }] }, { must: [{ key: 'city', match: { value: 'x' }, extra: 1 }] }, { must: [{ key: 'a b', match: { value: 1 } }] }, { must: [{ unknown: 1 }] }]) {
      expect(await status(q.scroll('c-cos', { filter: bad as never }))).toBe(400);
    }
  });

  it('a filtered search returns exactly limit results when that many match', async () => {
    const q = client();
    await q.createCollection('c-many', { vectors: { size: 8, distance: 'Cosine' } });
    const rnd = (i: number) => Array.from({ length: 8 }, (_, j) => Math.sin(i * 7.3 + j * 1.7));
    for (let b = 0; b < 3; b++) await q.upsert('c-many', { wait: true, points: Array.from({ length: 1000 }, (_, i) => ({ id: b * 1000 + i, vector: rnd(b * 1000 + i), payload: { rare: (b * 1000 + i) % 97 === 0, group: (b * 1000 + i) % 5 } })) });
    const rare = await q.search('c-many', { vector: rnd(1), limit: 20, filter: { must: [{ key: 'rare', match: { value: true } }] } });
    expect(rare).toHaveLength(20);
    const group = await q.search('c-many', { vector: rnd(2), limit: 50, filter: { must: [{ key: 'group', match: { value: 3 } }] } });
    expect(group).toHaveLength(50);
    expect(group.every((h) => (h.id as number) % 5 === 3)).toBe(true);
  });

  it('scrolls in id order with next_page_offset, and the Query API answers nearest, by id, and without a query', async () => {
    const q = client();
    const seen: unknown[] = [];
    let offset: string | number | null | undefined;
    do {
      const page = await q.scroll('c-cos', { limit: 10, offset: offset ?? undefined, with_payload: false });
      seen.push(...page.points.map((p) => p.id));
      offset = page.next_page_offset as string | number | null;
    } while (offset !== null && offset !== undefined);
    expect(seen).toHaveLength(37);
    expect(seen.slice(0, 12)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(typeof seen[36]).toBe('string');
    const near = await q.query('c-cos', { query: at(42), limit: 2, with_payload: true });
    expect(near.points.map((p) => p.id)).toEqual([4, 5]);
    expect(near.points[0]!.payload).toMatchObject({ deg: 40 });
    expect((await q.query('c-cos', { query: { nearest: at(42) }, limit: 1, filter: { must: [{ key: 'city', match: { value: 'Berlin' } }] } })).points[0]!.id).toBe(3);
    expect((await q.query('c-cos', { query: 9, limit: 1 })).points[0]!.id).toBe(9);
    expect((await q.query('c-cos', { limit: 3 })).points.map((p) => p.id)).toEqual([0, 1, 2]);
    expect(await status(q.query('c-cos', { prefetch: [{ query: at(1) }], query: { fusion: 'rrf' } } as never))).toBe(400);
    const batch = await q.queryBatch('c-cos', { searches: [{ query: at(0), limit: 1 }, { query: at(90), limit: 1 }] });
    expect(batch.map((b) => b.points[0]!.id)).toEqual([0, 9]);
  });

  it('sets, overwrites, deletes and clears payloads by id and by filter', async () => {
    const q = client();
    await q.setPayload('c-cos', { payload: { flag: 'x' }, points: [1, 2], wait: true });
    expect((await q.retrieve('c-cos', { ids: [1] }))[0]!.payload).toMatchObject({ flag: 'x', city: 'London' });
    await q.setPayload('c-cos', { payload: { zone: 'north' }, filter: { must: [{ key: 'deg', range: { gte: 340 } }] }, wait: true });
    expect((await q.count('c-cos', { filter: { must: [{ key: 'zone', match: { value: 'north' } }] } })).count).toBe(2);
    await q.overwritePayload('c-cos', { payload: { only: true }, points: [2], wait: true });
    expect((await q.retrieve('c-cos', { ids: [2] }))[0]!.payload).toEqual({ only: true });
    await q.deletePayload('c-cos', { keys: ['flag', 'meta.page'], points: [1], wait: true });
    const one = (await q.retrieve('c-cos', { ids: [1] }))[0]!.payload!;
    expect(one.flag).toBeUndefined();
    expect(one.meta).toEqual({ source: 'doc-1' });
    // The changed payload is what filters see.
    expect((await q.count('c-cos', { filter: { must: [{ key: 'meta.page', range: { gte: 0, lte: 1 } }] } })).count).toBe(1);
    await q.clearPayload('c-cos', { points: [2], wait: true });
    expect((await q.retrieve('c-cos', { ids: [2] }))[0]!.payload).toEqual({});
  });

  it('deletes points by ids and by filter', async () => {
    const q = client();
    await q.delete('c-cos', { points: [0, 1], wait: true });
    expect((await q.retrieve('c-cos', { ids: [0, 1, 3] })).map((p) => p.id)).toEqual([3]);
    await q.delete('c-cos', { filter: { must: [{ key: 'city', match: { value: 'Paris' } }] }, wait: true });
    expect((await q.count('c-cos', { filter: { must: [{ key: 'city', match: { value: 'Paris' } }] } })).count).toBe(0);
    expect((await q.search('c-cos', { vector: at(50), limit: 5 })).some((h) => h.id === 5)).toBe(false);
  });

  it('holds roles: a reader may search but not write; a user token may not touch shared collections', async () => {
    const r = client(reader);
    expect((await r.search('c-cos', { vector: at(0), limit: 1 })).length).toBe(1);
    expect(await status(r.upsert('c-cos', { wait: true, points: [{ id: 100, vector: at(1) }] }))).toBe(403);
    expect(await status(r.deleteCollection('c-cos'))).toBe(403);
    const u = client(user);
    expect(await status(u.getCollections())).toBe(403);
    expect(await status(u.search('c-cos', { vector: at(0), limit: 1 }))).toBe(403);
  });

  it('shares its data with the native API: points are vectors, payloads metadata', async () => {
    const native = await api(d, 'POST', '/v1/collections/c-cos/query', { vector: at(30), top_k: 1, include_metadata: true });
    expect(native.body.matches[0]).toMatchObject({ id: '3', metadata: { city: 'Berlin' } });
    const filtered = await api(d, 'POST', '/v1/collections/c-cos/query', { vector: at(30), top_k: 1, filter: { 'meta.source': 'doc-0' } });
    expect(filtered.body.matches[0].id).toBe('4');
  });
});
