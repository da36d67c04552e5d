import { describe, expect, it } from 'vitest';
import { compileQdrantFilter } from '../../../../src/daemon/compat/qdrant/qdrant-filter.js';
import { pointId, wireId } from '../../../../src/daemon/compat/qdrant/point-id.js';
import { InvalidInput } from '../../../../src/engines/errors.js';
import { metaRows } from '../../../../src/engines/vectors/metadata-filter.js';

// What the translation promises beyond the client tests: every spelling of an id is one id,
// nothing unknown is dropped (a dropped condition widens the filter), and the bounds hold.

describe('point ids', () => {
  it('canonicalises integers and every UUID spelling, refuses the rest', () => {
    const u = '6f0c1a52-2a4e-4b3e-9b49-7a0f0a5c0001';
    for (const form of [u, u.toUpperCase(), u.replaceAll('-', ''), `{${u}}`, `urn:uuid:${u}`]) expect(pointId(form)).toBe(u);
    expect(pointId(42)).toBe('42');
    expect(wireId('42')).toBe(42);
    expect(wireId(u)).toBe(u);
    expect(wireId('007')).toBe('007');
    for (const bad of [-1, 1.5, 2 ** 53, '42', 'abc', null, {}, [1]]) expect(() => pointId(bad)).toThrow(InvalidInput);
  });
});

describe('Qdrant filters', () => {
  const compile = (f: unknown) => compileQdrantFilter('c', f);

  it('an empty filter is no restriction; empty lists are neither', () => {
    expect(compile(undefined)).toBeUndefined();
    expect(compile({})).toBeUndefined();
    expect(compile({ must: [], should: [] })).toBeUndefined();
    expect(compile({ must: [{ has_id: [] }] })!.sql).toBe('0');
  });

  it('refuses what it cannot translate, naming where', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ must: [{ key: 'a', match: { value: 1 }, range: { gt: 1 } }] }, /exactly one of/],
      [{ must: [{ key: 'a', match: { phrase: 'x' } }] }, /phrase: not supported/],
      [{ must: [{ key: 'a', range: { gt: '2024-01-01' } }] }, /date ranges/],
      [{ must: [{ key: 'a', range: {} }] }, /at least one/],
      [{ must: [{ key: 'a', geo_radius: {} }] }, /geo/],
      [{ must: [{ nested: { key: 'a', filter: {} } }] }, /nested/],
      [{ filter: {} }, /unknown filter clause/],
      [{ must: [{ key: 'a b', match: { value: 1 } }] }, /not a payload key/],
      [{ must: [{ key: 'a..b', match: { value: 1 } }] }, /not a payload key/],
      [{ must: 'x' }, /expected an object/],
      [{ min_should: { conditions: [], min_count: -1 } }, /min_count/],
      [{ must: [{ has_id: ['nope'] }] }, /has_id\[0\]/],
    ];
    for (const [f, message] of cases) expect(() => compile(f), JSON.stringify(f)).toThrow(message);
  });

  it('bounds the size of a filter', () => {
    expect(() => compile({ must: Array.from({ length: 65 }, () => ({ key: 'a', match: { value: 1 } })) })).toThrow(/at most 64 conditions/);
    expect(() => compile({ must: [{ key: 'a', match: { any: Array.from({ length: 2001 }, (_, i) => i) } }] })).toThrow(/at most 2000 values/);
    let deep: Record<string, unknown> = { key: 'a', match: { value: 1 } };
    for (let i = 0; i < 10; i++) deep = { must: [deep] };
    expect(() => compile(deep)).toThrow(/nest at most/);
  });

  it('payloads are indexed by dotted path, through arrays of objects, with nulls', () => {
    const rows = metaRows({ a: { b: [1, { c: 'x' }], n: null }, 'top.level': true, 'bad key': 1, deep: { x: { y: { z: { w: { v: { u: { t: { s: 1 } } } } } } } } });
    expect(rows.map((r) => `${r.field}:${r.kind}`)).toEqual(['a:o', 'a.b:n', 'a.b:o', 'a.b.c:s', 'a.n:z', 'top.level:b', 'deep:o', 'deep.x:o', 'deep.x.y:o', 'deep.x.y.z:o', 'deep.x.y.z.w:o', 'deep.x.y.z.w.v:o', 'deep.x.y.z.w.v.u:o', 'deep.x.y.z.w.v.u.t:o']);
  });
});
