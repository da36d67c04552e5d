import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestNode } from '../../helpers/node.js';

// A small known graph:  ada -knows-> bob -knows-> cy -works_at-> acme ;  dee -knows-> ada ;
// eve stands alone.
describe('knowledge graph', () => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  beforeAll(async () => {
    t = await openTestNode();
    const people = ['ada', 'bob', 'cy', 'dee', 'eve'].map((id) => ({ id, type: 'person', name: id.toUpperCase(), vector: { collection: 'people' } }));
    expect((await t.call('POST', '/v1/graph/entities', { entities: [...people, { id: 'acme', type: 'company', name: 'Acme', props: { size: 10 } }] })).body).toEqual({ upserted: 6 });
    const rel = (from: string, type: string, to: string) => ({ from, type, to });
    expect(
      (await t.call('POST', '/v1/graph/relations', { relations: [rel('ada', 'knows', 'bob'), rel('bob', 'knows', 'cy'), rel('cy', 'works_at', 'acme'), rel('dee', 'knows', 'ada')] })).status,
    ).toBe(200);
  });
  afterAll(() => t.close());

  const ids = (xs: Array<{ id: string }>) => xs.map((x) => x.id).sort();

  it('reads an entity with its relation counts', async () => {
    const r = await t.call('GET', '/v1/graph/entities/bob');
    expect(r.body).toMatchObject({ id: 'bob', type: 'person', name: 'BOB', relations: { out: 1, in: 1 }, vector: { collection: 'people', id: 'bob' } });
    expect((await t.call('GET', '/v1/graph/entities/nobody')).status).toBe(404);
  });

  it('finds neighbours by depth, relation type and direction', async () => {
    const n = async (q: string) => (await t.call('GET', `/v1/graph/entities/ada/neighbors?${q}`)).body;
    expect(ids((await n('depth=1&direction=out')).entities)).toEqual(['bob']);
    expect(ids((await n('depth=1&direction=in')).entities)).toEqual(['dee']);
    expect(ids((await n('depth=1')).entities)).toEqual(['bob', 'dee']);
    expect(ids((await n('depth=3&direction=out')).entities)).toEqual(['acme', 'bob', 'cy']);
    expect(ids((await n('depth=3&direction=out&type=knows')).entities)).toEqual(['bob', 'cy']);
    const two = await n('depth=2&direction=out');
    expect(two.relations).toEqual(expect.arrayContaining([expect.objectContaining({ from: 'ada', type: 'knows', to: 'bob' }), expect.objectContaining({ from: 'bob', to: 'cy' })]));
    expect((await t.call('GET', '/v1/graph/entities/ada/neighbors?depth=4')).status).toBe(400);
  });

  it('finds the shortest path as alternating entities and relations, or 404', async () => {
    const p = await t.call('GET', '/v1/graph/path?from=dee&to=acme');
    expect(p.body.path.map((s: { kind: string; id?: string; type: string }) => (s.kind === 'entity' ? s.id : `-${s.type}->`))).toEqual(['dee', '-knows->', 'ada', '-knows->', 'bob', '-knows->', 'cy', '-works_at->', 'acme']);
    expect((await t.call('GET', '/v1/graph/path?from=acme&to=dee')).status).toBe(404);
    expect((await t.call('GET', '/v1/graph/path?from=acme&to=dee&direction=both')).body.path).toHaveLength(9);
    expect((await t.call('GET', '/v1/graph/path?from=dee&to=acme&max_depth=3')).status).toBe(404);
    expect((await t.call('GET', '/v1/graph/path?from=ada&to=eve&direction=both')).status).toBe(404);
    expect((await t.call('GET', '/v1/graph/path?from=ada&to=ghost')).status).toBe(404);
  });

  it('refuses a relation with an unknown end, writing nothing', async () => {
    const lsn = t.node.sql.writer.lastLsn;
    const r = await t.call('POST', '/v1/graph/relations', { relations: [{ from: 'ada', type: 'knows', to: 'eve' }, { from: 'ada', type: 'knows', to: 'ghost' }] });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/ghost/);
    expect(t.node.sql.writer.lastLsn).toBe(lsn);
    expect((await t.call('GET', '/v1/graph/entities/ada')).body.relations.out).toBe(1);
  });

  it('a vector query can answer with the entities that carry the vectors', async () => {
    await t.call('POST', '/v1/collections', { name: 'people', dimensions: 2, metric: 'cos' });
    await t.call('POST', '/v1/collections/people/upsert', { vectors: [{ id: 'ada', values: [1, 0] }, { id: 'bob', values: [0, 1] }, { id: 'loose', values: [1, 0.1] }] });
    const r = await t.call('POST', '/v1/collections/people/query', { vector: [1, 0.01], top_k: 3, include_entities: true });
    expect(r.body.matches.map((m: { id: string; entity: { name: string } | null }) => [m.id, m.entity?.name ?? null])).toEqual([
      ['ada', 'ADA'],
      ['loose', null],
      ['bob', 'BOB'],
    ]);
  });

  it('a neighbourhood answer carries at most MAX_RELATIONS relations, and says when it was cut', async () => {
    const hub = Array.from({ length: 120 }, (_, i) => ({ id: `h${i}`, type: 'node', name: `h${i}` }));
    await t.call('POST', '/v1/graph/entities', { entities: hub });
    // A 120-node clique: 14,280 relations within two hops of any member.
    for (let i = 0; i < hub.length; i++) {
      const relations = hub.filter((_, j) => j !== i).map((h) => ({ from: `h${i}`, type: 'links', to: h.id }));
      expect((await t.call('POST', '/v1/graph/relations', { relations })).status).toBe(200);
    }
    const r = await t.call('GET', '/v1/graph/entities/h0/neighbors?depth=2');
    expect(r.status).toBe(200);
    expect(r.body.relations).toHaveLength(10_000);
    expect(r.body.truncated).toBe(true);
    expect((await t.call('GET', '/v1/graph/entities/ada/neighbors?depth=1')).body.truncated).toBeUndefined();
  });
});
