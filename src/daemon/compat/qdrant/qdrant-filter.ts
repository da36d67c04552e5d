import { InvalidInput } from '../../../engines/errors.js';
import type { SqlValue } from '../../../engines/sql/database.js';
import { FIELD, inRows, MAX_FILTER_VALUES, MAX_PATH_DEPTH, scalarRow } from '../../../engines/vectors/metadata-filter.js';
import type { Where } from '../../../engines/vectors/vector-store.js';
import { pointId } from './point-id.js';

// Qdrant's filter language compiled to the SQL Strata's vector planner runs (the same
// vector_meta rows the native filter uses), so a filtered search is planned exactly like a
// native one: counted first, then exact or oversampled HNSW, and returns `limit` results
// whenever that many points match.
//
// Every clause either compiles or is refused with a 400 naming it: a condition dropped
// silently would widen the filter, and a filter that matches more than asked leaks data.
//
// Semantics, as Qdrant documents them: a payload key is a dotted path (`a[].b` is `a.b`);
// `match.value` / `any` / `except` compare a scalar or any element of an array; `except`
// needs at least one value outside the list (a missing field does not match); `text` is a
// substring test (Qdrant's behaviour without a full-text index); `range` is numeric;
// `is_empty` holds for a missing field, null or []; `is_null` for an explicit null.

const MAX_CONDITIONS = 64;
const MAX_DEPTH = 8;

type Json = Record<string, unknown>;

export function compileQdrantFilter(collection: string, filter: unknown, vectorName = ''): Where | undefined {
  if (filter === undefined || filter === null) return undefined;
  const c = new Compiler(collection, vectorName);
  const sql = c.filter(filter, 'filter', 0);
  return sql === undefined ? undefined : { sql, params: c.params };
}

class Compiler {
  readonly params: SqlValue[] = [];
  private conditions = 0;
  private values = 0;

  constructor(
    private readonly collection: string,
    private readonly vectorName: string,
  ) {}

  /** SQL for a Filter object, or undefined when it has no clause (matches everything). */
  filter(f: unknown, where: string, depth: number): string | undefined {
    if (depth > MAX_DEPTH) throw new InvalidInput(`${where}: filters nest at most ${MAX_DEPTH} deep`);
    const o = object(f, where);
    for (const k of Object.keys(o)) if (!['must', 'should', 'must_not', 'min_should'].includes(k)) throw new InvalidInput(`${where}.${k}: unknown filter clause (use must, should, must_not, min_should)`);
    const parts: string[] = [];
    const must = this.list(o.must, `${where}.must`, depth);
    if (must.length) parts.push(...must);
    const should = this.list(o.should, `${where}.should`, depth);
    if (should.length) parts.push(`(${should.join(' OR ')})`);
    const mustNot = this.list(o.must_not, `${where}.must_not`, depth);
    if (mustNot.length) parts.push(`NOT (${mustNot.join(' OR ')})`);
    if (o.min_should !== undefined && o.min_should !== null) {
      const ms = object(o.min_should, `${where}.min_should`);
      const conds = this.list(ms.conditions, `${where}.min_should.conditions`, depth);
      const n = ms.min_count;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new InvalidInput(`${where}.min_should.min_count: expected an unsigned integer`);
      if (conds.length) {
        parts.push(`((${conds.map((s) => `(${s})`).join(' + ')}) >= ?)`);
        this.params.push(n);
      } else if (n > 0) parts.push('0');
    }
    return parts.length ? parts.join(' AND ') : undefined;
  }

  /** A clause's conditions (one object or a list of them). */
  private list(v: unknown, where: string, depth: number): string[] {
    if (v === undefined || v === null) return [];
    const items = Array.isArray(v) ? v : [v];
    return items.map((c, i) => this.condition(c, Array.isArray(v) ? `${where}[${i}]` : where, depth));
  }

  private condition(c: unknown, where: string, depth: number): string {
    if (++this.conditions > MAX_CONDITIONS) throw new InvalidInput(`a filter holds at most ${MAX_CONDITIONS} conditions`);
    const o = object(c, where);
    if ('must' in o || 'should' in o || 'must_not' in o || 'min_should' in o) return this.filter(o, where, depth + 1) ?? '1';
    if ('has_id' in o) {
      only(o, ['has_id'], where);
      if (!Array.isArray(o.has_id)) throw new InvalidInput(`${where}.has_id: expected a list of point ids`);
      this.count(o.has_id.length, where);
      if (o.has_id.length === 0) return '0';
      const ids = o.has_id.map((id, i) => pointId(id, `${where}.has_id[${i}]`));
      this.params.push(...ids);
      return `v.id IN (${ids.map(() => '?').join(', ')})`;
    }
    if ('has_vector' in o) {
      only(o, ['has_vector'], where);
      // Every point holds the collection's one vector.
      return o.has_vector === this.vectorName ? '1' : '0';
    }
    if ('is_empty' in o) {
      only(o, ['is_empty'], where);
      const key = this.key(object(o.is_empty, `${where}.is_empty`).key, `${where}.is_empty.key`);
      // A value below the key leaves an `o` row at the key itself (metaRows), so one lookup.
      this.params.push(this.collection, key);
      return "v.key NOT IN (SELECT key FROM vector_meta WHERE collection = ? AND field = ? AND kind != 'z')";
    }
    if ('is_null' in o) {
      only(o, ['is_null'], where);
      const key = this.key(object(o.is_null, `${where}.is_null`).key, `${where}.is_null.key`);
      return this.meta(key, "kind = 'z'", []);
    }
    if ('nested' in o) throw new InvalidInput(`${where}.nested: nested object filters are not supported; name the field by its dotted path`);
    if ('key' in o) return this.field(o, where);
    throw new InvalidInput(`${where}: unknown condition (use key with match/range/values_count, has_id, is_empty, is_null, or a nested filter)`);
  }

  private field(o: Json, where: string): string {
    const key = this.key(o.key, `${where}.key`);
    const given = Object.keys(o).filter((k) => k !== 'key' && o[k] !== null && o[k] !== undefined);
    for (const k of given) {
      if (['geo_bounding_box', 'geo_radius', 'geo_polygon'].includes(k)) throw new InvalidInput(`${where}.${k}: geo conditions are not supported`);
      if (!['match', 'range', 'values_count'].includes(k)) throw new InvalidInput(`${where}.${k}: unknown field condition (use match, range or values_count)`);
    }
    if (given.length !== 1) throw new InvalidInput(`${where}: a field condition needs exactly one of match, range, values_count`);
    if (o.match !== undefined && o.match !== null) return this.match(key, object(o.match, `${where}.match`), `${where}.match`);
    if (o.range !== undefined && o.range !== null) {
      const bounds = this.bounds(object(o.range, `${where}.range`), `${where}.range`);
      return this.meta(key, `kind = 'n' AND ${bounds.sql}`, bounds.params);
    }
    const r = object(o.values_count, `${where}.values_count`);
    const bounds = this.bounds(r, `${where}.values_count`, 'COUNT(*)');
    // Grouped once over the field's rows, not counted per point (a correlated count was
    // quadratic: 50 s on 33k points in review). A point without values has count 0, which
    // no group shows: it is added when 0 is within the bounds.
    const zeroFits = Object.entries(r).every(([k, v]) => typeof v !== 'number' || (k === 'gt' ? 0 > v : k === 'gte' ? 0 >= v : k === 'lt' ? 0 < v : 0 <= v));
    this.params.push(this.collection, key, ...bounds.params);
    const grouped = `v.key IN (SELECT key FROM vector_meta WHERE collection = ? AND field = ? AND kind != 'z' GROUP BY key HAVING ${bounds.sql})`;
    if (!zeroFits) return grouped;
    this.params.push(this.collection, key);
    return `(${grouped} OR v.key NOT IN (SELECT key FROM vector_meta WHERE collection = ? AND field = ? AND kind != 'z'))`;
  }

  private match(key: string, m: Json, where: string): string {
    const kinds = Object.keys(m);
    if (kinds.length !== 1) throw new InvalidInput(`${where}: expected one of value, any, except, text`);
    const kind = kinds[0]!;
    const v = m[kind];
    if (kind === 'value') {
      this.count(1, where);
      const row = scalarRow(key, v);
      if (!row) throw new InvalidInput(`${where}.value: expected a string, an integer or a boolean`);
      return row.kind === 's' ? this.meta(key, "kind = 's' AND t = ?", [row.t]) : this.meta(key, 'kind = ? AND n = ?', [row.kind, row.n]);
    }
    if (kind === 'any' || kind === 'except') {
      if (!Array.isArray(v)) throw new InvalidInput(`${where}.${kind}: expected a list of strings or integers`);
      this.count(v.length, where);
      const set = this.inSet(key, v, `${where}.${kind}`);
      if (kind === 'any') return set ? this.meta(key, set.sql, set.params) : '0';
      // At least one value outside the list.
      return this.meta(key, set ? `kind IN ('s', 'n', 'b') AND NOT (${set.sql})` : "kind IN ('s', 'n', 'b')", set?.params ?? []);
    }
    if (kind === 'text') {
      if (typeof v !== 'string' || v.length === 0) throw new InvalidInput(`${where}.text: expected a non-empty string`);
      this.count(1, where);
      return this.meta(key, "kind = 's' AND instr(t, ?) > 0", [v]);
    }
    throw new InvalidInput(`${where}.${kind}: not supported (use value, any, except or text)`);
  }

  /** The list's values as index rows (strings and numbers only, as Qdrant's keyword and integer matches), for inRows. */
  private inSet(key: string, list: unknown[], where: string): { sql: string; params: SqlValue[] } | undefined {
    const rows = list.map((x, i) => {
      const row = typeof x === 'string' || typeof x === 'number' ? scalarRow(key, x) : undefined;
      if (!row) throw new InvalidInput(`${where}[${i}]: expected a string or an integer`);
      return row;
    });
    return inRows(rows);
  }

  private bounds(r: Json, where: string, column = 'n'): { sql: string; params: SqlValue[] } {
    const ops = { gt: '>', gte: '>=', lt: '<', lte: '<=' } as const;
    const parts: string[] = [];
    const params: SqlValue[] = [];
    for (const [k, v] of Object.entries(r)) {
      if (v === null || v === undefined) continue;
      if (!(k in ops)) throw new InvalidInput(`${where}.${k}: unknown bound (use gt, gte, lt, lte)`);
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new InvalidInput(`${where}.${k}: expected a finite number (date ranges are not supported)`);
      parts.push(`${column} ${ops[k as keyof typeof ops]} ?`);
      params.push(v);
    }
    if (parts.length === 0) throw new InvalidInput(`${where}: give at least one of gt, gte, lt, lte`);
    return { sql: parts.join(' AND '), params };
  }

  /** True for vectors with a metadata row of `field` meeting `cond`. */
  private meta(field: string, cond: string, values: SqlValue[]): string {
    this.params.push(this.collection, field, ...values);
    return `v.key IN (SELECT key FROM vector_meta WHERE collection = ? AND field = ? AND ${cond})`;
  }

  private key(k: unknown, where: string): string {
    if (typeof k !== 'string') throw new InvalidInput(`${where}: expected a payload key`);
    const path = k.replaceAll('[]', '');
    if (!FIELD.test(path) || path.includes('..') || path.endsWith('.')) throw new InvalidInput(`${where}: "${k.slice(0, 80)}" is not a payload key Strata indexes (letters, digits, _ and -, dotted for nested keys, up to 128 characters)`);
    if (path.split('.').length > MAX_PATH_DEPTH) throw new InvalidInput(`${where}: "${k.slice(0, 80)}" is deeper than the ${MAX_PATH_DEPTH} levels Strata indexes`);
    return path;
  }

  private count(n: number, where: string): void {
    this.values += n;
    if (this.values > MAX_FILTER_VALUES) throw new InvalidInput(`${where}: a filter holds at most ${MAX_FILTER_VALUES} values in all`);
  }
}

function object(v: unknown, where: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidInput(`${where}: expected an object`);
  return v as Json;
}

function only(o: Json, keys: string[], where: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new InvalidInput(`${where}.${k}: not expected beside ${keys.join(', ')}`);
}
