import { InvalidInput } from '../errors.js';
import type { SqlValue } from '../sql/database.js';

// Metadata filters (API.md): `{field: value}` equality, `{field: {"$in": [...]}}`, and
// `{field: {"$gte"|"$lte"|"$gt"|"$lt": n}}`, combined by AND. They compile to SQL over
// vector_meta, where every scalar of a vector's metadata is a row, indexed by (collection,
// field, kind, value). A nested value's field is its dotted path (`{"a": {"b": 1}}` is the row
// a.b = 1: Qdrant's filters name nested keys so, and LangChain keeps a document's metadata one
// level down), and every scalar element of an array is a row of the array's path (so `{tags:
// "x"}` means "tags contains x"; objects inside arrays continue the same path, Qdrant's
// `a[].b`). A null is a row of kind z and an object one of kind o, so "is null" and "is
// empty" are index lookups too. One
// compiler serves both the count that plans a query and the check of HNSW candidates, so the
// two can never disagree.

export type Scalar = string | number | boolean;
export type Condition = Scalar | { $in?: Scalar[]; $gte?: number; $lte?: number; $gt?: number; $lt?: number };
export type Filter = Record<string, Condition>;

export const FIELD = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/;
/** A key below the top level: the same characters, no dot (it would read as a deeper path). */
const SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;
export const MAX_FILTER_FIELDS = 64;
export const MAX_FILTER_VALUES = 2000;
const RANGE = { $gte: '>=', $lte: '<=', $gt: '>', $lt: '<' } as const;

export interface MetaRow {
  field: string;
  /** s string, n number, b boolean (n = 0/1), z null, o an object (or a value the index does not descend into). */
  kind: 's' | 'n' | 'b' | 'z' | 'o';
  t: string | null;
  n: number | null;
}

/** How deep nested metadata is indexed; a filter may not name a deeper path (it would silently match nothing). */
export const MAX_PATH_DEPTH = 8;

/** The indexed rows for one vector's metadata. */
export function metaRows(metadata: Record<string, unknown> | undefined | null): MetaRow[] {
  const rows: MetaRow[] = [];
  if (metadata) walk(metadata, '', 0, rows);
  return rows;
}

/**
 * Every object met (and every array of arrays, and whatever lies deeper than MAX_PATH_DEPTH)
 * leaves an `o` row for its path: "is empty" and "how many values" then see a value there even
 * when the index holds nothing below it (keys with other characters, deeper levels) — a
 * review found `is_empty` matching such payloads, which widened `must_not`.
 */
function walk(object: Record<string, unknown>, prefix: string, depth: number, rows: MetaRow[]): void {
  for (const [key, value] of Object.entries(object)) {
    const field = prefix + key;
    if (!FIELD.test(field) || (prefix && !SEGMENT.test(key))) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== null && typeof v === 'object') {
        rows.push({ field, kind: 'o', t: null, n: null });
        if (!Array.isArray(v) && depth + 1 < MAX_PATH_DEPTH) walk(v as Record<string, unknown>, `${field}.`, depth + 1, rows);
        continue;
      }
      const row = v === null ? { field, kind: 'z' as const, t: null, n: null } : scalarRow(field, v);
      if (row) rows.push(row);
    }
  }
}

export function scalarRow(field: string, v: unknown): MetaRow | undefined {
  if (typeof v === 'string') return { field, kind: 's', t: v, n: null };
  if (typeof v === 'number' && Number.isFinite(v)) return { field, kind: 'n', t: null, n: v };
  if (typeof v === 'boolean') return { field, kind: 'b', t: null, n: v ? 1 : 0 };
  return undefined;
}

/**
 * SQL over vector_meta's (kind, t, n) true for a row holding any of these values, with its
 * params; undefined for none. Shared by the native `$in` and Qdrant's `any` / `except`.
 */
export function inRows(rows: readonly MetaRow[]): { sql: string; params: SqlValue[] } | undefined {
  const alts: string[] = [];
  const params: SqlValue[] = [];
  for (const [kind, column] of [['s', 't'], ['n', 'n'], ['b', 'n']] as const) {
    const values = rows.filter((r) => r.kind === kind).map((r) => r[column]);
    if (values.length === 0) continue;
    alts.push(`(kind = '${kind}' AND ${column} IN (${values.map(() => '?').join(', ')}))`);
    params.push(...values);
  }
  return alts.length ? { sql: `(${alts.join(' OR ')})`, params } : undefined;
}

/**
 * SQL that is true for the rows of `vectors v` matching the filter (and the params it binds,
 * after the collection name for each condition). Empty filter: undefined.
 */
export function compileFilter(collection: string, filter: Filter | undefined): { sql: string; params: SqlValue[] } | undefined {
  if (!filter || Object.keys(filter).length === 0) return undefined;
  // SQLite's expression tree and its bound variables are finite: past these, 400, not a 500.
  if (Object.keys(filter).length > MAX_FILTER_FIELDS) throw new InvalidInput(`a filter names at most ${MAX_FILTER_FIELDS} fields`);
  const values = Object.values(filter).reduce<number>((n, c) => n + (typeof c === 'object' && c !== null && Array.isArray(c.$in) ? c.$in.length : 1), 0);
  if (values > MAX_FILTER_VALUES) throw new InvalidInput(`a filter holds at most ${MAX_FILTER_VALUES} values in all ($in lists included)`);
  const parts: string[] = [];
  const params: SqlValue[] = [];
  const sub = (cond: string, values: SqlValue[]) => {
    parts.push(`v.key IN (SELECT key FROM vector_meta WHERE collection = ? AND field = ? AND ${cond})`);
    params.push(collection, ...values);
  };
  for (const [field, condition] of Object.entries(filter)) {
    if (!FIELD.test(field)) throw new InvalidInput(`filter field "${field}" is not a valid field name`);
    if (typeof condition !== 'object' || condition === null) {
      const row = scalarRow(field, condition);
      if (!row) throw new InvalidInput(`filter on "${field}": expected a string, a finite number or a boolean`);
      if (row.kind === 's') sub("kind = 's' AND t = ?", [field, row.t]);
      else sub('kind = ? AND n = ?', [field, row.kind, row.n]);
      continue;
    }
    const ops = Object.keys(condition);
    if (ops.length === 0) throw new InvalidInput(`filter on "${field}" has no operator`);
    for (const op of ops) {
      if (op === '$in') {
        const list = condition.$in;
        if (!Array.isArray(list) || list.length === 0 || list.length > 1000) throw new InvalidInput(`filter on "${field}": $in needs 1 to 1000 values`);
        const rows = list.map((v) => scalarRow(field, v));
        if (rows.some((r) => !r)) throw new InvalidInput(`filter on "${field}": $in values must be strings, finite numbers or booleans`);
        const set = inRows(rows as MetaRow[])!;
        sub(set.sql, [field, ...set.params]);
      } else if (op in RANGE) {
        const n = (condition as Record<string, unknown>)[op];
        if (typeof n !== 'number' || !Number.isFinite(n)) throw new InvalidInput(`filter on "${field}": ${op} needs a finite number`);
        sub(`kind = 'n' AND n ${RANGE[op as keyof typeof RANGE]} ?`, [field, n]);
      } else {
        throw new InvalidInput(`filter on "${field}": unknown operator ${op} (use $in, $gte, $lte, $gt, $lt)`);
      }
    }
  }
  return { sql: parts.join(' AND '), params };
}
