import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { unpack } from 'msgpackr';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase, SqlValue } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Writer } from '../sql/writer.js';
import { compileFilter, metaRows, type Filter } from './metadata-filter.js';
import { VectorIndex, type IndexConfig } from './vector-index.js';
import { checkVector, toUpsertBatch, type UpsertBatch } from './upsert-batch.js';
import { decodeBody } from '../body-decoder.js';
import { TextWorker } from '../text-worker.js';
import { toQdrantBatch } from '../../daemon/compat/qdrant/qdrant-points.js';

// Collections of vectors with metadata. SQLite holds the truth (every vector's float32 values
// and metadata, written through the change log); each collection's usearch HNSW index is
// derived state, kept in a worker thread (vector-index.ts) and saved to
// <index_dir>/<name>.usearch with a sidecar naming the LSN it includes. On start the file is
// loaded and the change log replayed past that LSN; a missing, unreadable or stale file is
// rebuilt from SQLite. So kill -9 can cost a rebuild, never a vector.
//
// Queries with a filter are planned: the matching set is counted in SQLite first. A small set
// (at most exact_search_max) is searched exactly; a larger one goes to HNSW with an
// oversampling factor from the set's selectivity, doubled until top_k candidates pass the
// filter, and exact search over the set when even the whole index is not enough. A filtered
// query therefore returns exactly top_k results whenever that many vectors match.

export const vectorMigrations: Migration[] = [
  {
    engine: 'vectors',
    version: 1,
    name: 'collections, vectors and indexed metadata',
    sql: `
      CREATE TABLE collections (
        name TEXT PRIMARY KEY,
        dimensions INTEGER NOT NULL,
        metric TEXT NOT NULL,
        dtype TEXT NOT NULL,
        connectivity INTEGER NOT NULL,
        expansion_add INTEGER NOT NULL,
        expansion_search INTEGER NOT NULL,
        -- usearch keys are integers; string ids map to them here, never reused.
        next_key INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE vectors (
        collection TEXT NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
        id TEXT NOT NULL,
        key INTEGER NOT NULL,
        vec BLOB NOT NULL,              -- float32 little-endian, whatever the index dtype
        metadata TEXT,
        PRIMARY KEY (collection, id),
        UNIQUE (collection, key)
      ) STRICT;
      CREATE TABLE vector_meta (
        collection TEXT NOT NULL,
        key INTEGER NOT NULL,
        field TEXT NOT NULL,
        kind TEXT NOT NULL,             -- s string, n number, b boolean (n = 0/1)
        t TEXT,
        n REAL
      ) STRICT;
      CREATE INDEX vector_meta_t ON vector_meta (collection, field, kind, t, key);
      CREATE INDEX vector_meta_n ON vector_meta (collection, field, kind, n, key);
      CREATE INDEX vector_meta_key ON vector_meta (collection, key);
    `,
  },
  {
    engine: 'vectors',
    version: 2,
    name: 'collection props, point order, nested metadata paths',
    // props: what a compatible API needs to remember about a collection (the Qdrant vector
    // name, declared payload indexes). The expression index serves Qdrant's scroll order:
    // integer ids numerically (decimal strings: by length, then text), then the others.
    // vector_meta is rebuilt because metaRows now indexes nested paths and nulls.
    sql: `
      ALTER TABLE collections ADD COLUMN props TEXT NOT NULL DEFAULT '{}';
      CREATE INDEX vectors_point_order ON vectors (collection, (id GLOB '*[^0-9]*'), length(id), id);
      DELETE FROM vector_meta;
    `,
    run: (db) => {
      const meta = db.prepare('INSERT INTO vector_meta (collection, key, field, kind, t, n) VALUES (?, ?, ?, ?, ?, ?)');
      const page = db.prepare<{ rowid: number; collection: string; key: number; metadata: string }>(
        'SELECT rowid, collection, key, metadata FROM vectors WHERE rowid > ? AND metadata IS NOT NULL ORDER BY rowid LIMIT 1000',
      );
      for (let after = 0; ; ) {
        const rows = page.all(after);
        if (rows.length === 0) break;
        for (const v of rows) for (const r of metaRows(JSON.parse(v.metadata) as Record<string, unknown>)) meta.run(v.collection, v.key, r.field, r.kind, r.t, r.n);
        after = rows[rows.length - 1]!.rowid;
      }
    },
  },
];

/** SQL over `vectors v` (and the params it binds) that selects a set of vectors: a compiled filter. */
export interface Where {
  sql: string;
  params: SqlValue[];
}

/** What a compatible API remembers about a collection (Qdrant: its vector's name, payload indexes). */
export interface CollectionProps {
  vector_name?: string;
  payload_schema?: Record<string, unknown>;
}

export type Metric = 'cos' | 'l2' | 'ip';
export type Dtype = 'f32' | 'f16' | 'i8';

/** Indexed metadata values (rows of vector_meta) one vector, and one upsert, may add. */
export const MAX_INDEXED_PER_VECTOR = 256;
export const MAX_INDEXED_PER_UPSERT = 65_536;
/** Vectors one metadata change by filter may touch (one write holds them all). */
export const MAX_METADATA_UPDATE = 10_000;

/** A vector as stored: id, metadata and, when asked for, values. */
export interface Stored {
  id: string;
  metadata: Record<string, unknown> | null;
  values?: number[];
}

export interface CollectionSpec {
  name: string;
  dimensions: number;
  metric: Metric;
  dtype: Dtype;
  connectivity: number;
  expansion_add: number;
  expansion_search: number;
}

export interface CollectionInfo extends CollectionSpec {
  count: number;
  memory_bytes: number;
  tombstones: number;
  index_lsn: number;
  created_at: string;
}

export interface VectorInput {
  id: string;
  values: ArrayLike<number>;
  metadata?: Record<string, unknown> | undefined;
}

export interface QueryInput {
  vector: ArrayLike<number>;
  top_k: number;
  filter?: Filter | undefined;
  /** An already compiled filter (a compatible API's own filter language); wins over `filter`. */
  where?: Where | undefined;
  include_metadata?: boolean | undefined;
  include_values?: boolean | undefined;
}

export interface Match {
  id: string;
  score: number;
  metadata?: Record<string, unknown> | null;
  values?: number[];
}

export interface VectorStoreOptions {
  indexDir: string;
  maxBatch: number;
  /** Filtered queries whose matching set is at most this large are answered by exact search. */
  exactSearchMax: number;
  /** Tombstones / (live + tombstones) above which the index is rebuilt in the background. */
  compactRatio: number;
}

export interface VectorEvents {
  queryDuration?(seconds: number, plan: 'hnsw' | 'filtered_hnsw' | 'exact'): void;
  log?(msg: string, fields?: Record<string, unknown>): void;
}

interface UpsertPayload {
  collection: string;
  items: Array<{ id: string; key: number; vec: Uint8Array; metadata: string | null }>;
  next_key: number;
}

interface Live {
  spec: CollectionSpec;
  index: VectorIndex;
  /** A rebuild in progress: changes go to both, queries to the old one, until it swaps in. */
  building?: VectorIndex;
  tombstones: number;
  size: number;
  savedLsn: number;
  savedBytes: number;
  savedSize: number;
  appliedLsn: number;
}

const BYTES: Record<Dtype, number> = { f32: 4, f16: 2, i8: 1 };

/** Upsert bodies up to this size are decoded in place: a worker round trip costs more. */
const DECODE_INLINE_MAX_BYTES = 64 * 1024;

export class VectorStore {
  private readonly created: ChangeType<CollectionSpec & { created_at: string; props?: string }>;
  private readonly propsSet: ChangeType<{ name: string; props: string }>;
  private readonly metadataSet: ChangeType<{ collection: string; items: Array<{ key: number; metadata: string | null }> }>;
  private readonly dropped: ChangeType<{ name: string }>;
  private readonly upserted: ChangeType<UpsertPayload>;
  private readonly removed: ChangeType<{ collection: string; keys: number[] }>;
  private readonly live = new Map<string, Live>();
  /** Decodes big upsert bodies off the event loop; its own thread, so a long tokenize job never delays an upsert. */
  private readonly decoder = new TextWorker('vector decode');

  constructor(
    private readonly db: SqlDatabase,
    private readonly changes: ChangeLog,
    private readonly writer: Writer,
    private readonly options: VectorStoreOptions,
    private readonly events: VectorEvents = {},
  ) {
    this.created = changes.define('vectors', 'create_collection', (db, c) => {
      db.prepare(
        `INSERT INTO collections (name, dimensions, metric, dtype, connectivity, expansion_add, expansion_search, next_key, created_at, props)
         VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
      ).run(c.name, c.dimensions, c.metric, c.dtype, c.connectivity, c.expansion_add, c.expansion_search, c.created_at, c.props ?? '{}');
    });
    this.propsSet = changes.define('vectors', 'set_props', (db, p) => {
      db.prepare('UPDATE collections SET props = ? WHERE name = ?').run(p.props, p.name);
    });
    // Metadata changed without the vector (Qdrant's payload calls): the index is untouched.
    this.metadataSet = changes.define('vectors', 'set_metadata', (db, p) => {
      const put = db.prepare('UPDATE vectors SET metadata = ? WHERE collection = ? AND key = ?');
      const clear = db.prepare('DELETE FROM vector_meta WHERE collection = ? AND key = ?');
      const meta = db.prepare('INSERT INTO vector_meta (collection, key, field, kind, t, n) VALUES (?, ?, ?, ?, ?, ?)');
      for (const it of p.items) {
        put.run(it.metadata, p.collection, it.key);
        clear.run(p.collection, it.key);
        for (const r of metaRows(it.metadata ? (JSON.parse(it.metadata) as Record<string, unknown>) : undefined)) meta.run(p.collection, it.key, r.field, r.kind, r.t, r.n);
      }
    });
    this.dropped = changes.define('vectors', 'drop_collection', (db, p) => {
      db.prepare('DELETE FROM vector_meta WHERE collection = ?').run(p.name);
      db.prepare('DELETE FROM collections WHERE name = ?').run(p.name);
    });
    this.upserted = changes.define<UpsertPayload>('vectors', 'upsert', (db, p) => {
      const put = db.prepare(
        `INSERT INTO vectors (collection, id, key, vec, metadata) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (collection, id) DO UPDATE SET vec = excluded.vec, metadata = excluded.metadata`,
      );
      const clear = db.prepare('DELETE FROM vector_meta WHERE collection = ? AND key = ?');
      const meta = db.prepare('INSERT INTO vector_meta (collection, key, field, kind, t, n) VALUES (?, ?, ?, ?, ?, ?)');
      for (const it of p.items) {
        put.run(p.collection, it.id, it.key, it.vec, it.metadata);
        clear.run(p.collection, it.key);
        for (const r of metaRows(it.metadata ? (JSON.parse(it.metadata) as Record<string, unknown>) : undefined)) {
          meta.run(p.collection, it.key, r.field, r.kind, r.t, r.n);
        }
      }
      db.prepare('UPDATE collections SET next_key = ? WHERE name = ?').run(p.next_key, p.collection);
    });
    this.removed = changes.define('vectors', 'delete', (db, p) => {
      const del = db.prepare('DELETE FROM vectors WHERE collection = ? AND key = ?');
      const clear = db.prepare('DELETE FROM vector_meta WHERE collection = ? AND key = ?');
      for (const key of p.keys) {
        del.run(p.collection, key);
        clear.run(p.collection, key);
      }
    });
  }

  /** Loads (or rebuilds) every collection's index; call once before serving. */
  async open(): Promise<void> {
    mkdirSync(this.options.indexDir, { recursive: true });
    for (const spec of this.db.prepare<CollectionSpec>('SELECT * FROM collections').all()) await this.load(spec);
  }

  async createCollection(actor: Actor, spec: CollectionSpec, props?: CollectionProps): Promise<CollectionInfo> {
    await this.writer.write(actor, (tx) => {
      if (this.specOf(spec.name)) throw new Conflict(`collection ${spec.name} already exists`);
      tx.apply(this.created, { ...spec, created_at: new Date().toISOString(), ...(props ? { props: JSON.stringify(props) } : {}) });
      tx.audit('vectors.create_collection', `collection:${spec.name}`, { dimensions: spec.dimensions, metric: spec.metric, dtype: spec.dtype });
    });
    // A file left by an earlier collection of the same name must not be loaded.
    this.removeFiles(spec.name);
    await this.load(spec);
    return this.info(spec.name);
  }

  async deleteCollection(actor: Actor, name: string): Promise<void> {
    this.requireSpec(name);
    await this.writer.write(actor, (tx) => {
      this.requireSpec(name);
      tx.apply(this.dropped, { name });
    });
    const live = this.live.get(name);
    this.live.delete(name);
    await live?.index.close();
    await live?.building?.close();
    this.removeFiles(name);
  }

  /** A collection's spec and props in one primary-key read (no count: the hot path of a compatible API). */
  spec(name: string): CollectionSpec & { props: CollectionProps } {
    const row = this.requireSpec(name);
    return { name: row.name, dimensions: row.dimensions, metric: row.metric, dtype: row.dtype, connectivity: row.connectivity, expansion_add: row.expansion_add, expansion_search: row.expansion_search, props: JSON.parse(row.props) as CollectionProps };
  }

  /** Replaces what a compatible API remembers about the collection (read, changed, written in one write). */
  async updateProps(actor: Actor, name: string, change: (props: CollectionProps) => CollectionProps): Promise<number> {
    return this.writer.write(actor, (tx) => {
      const props = change(JSON.parse(this.requireSpec(name).props) as CollectionProps);
      const lsn = tx.apply(this.propsSet, { name, props: JSON.stringify(props) });
      tx.audit('vectors.set_props', `collection:${name}`, props as Record<string, unknown>);
      return lsn;
    });
  }

  list(): CollectionInfo[] {
    return this.db.prepare<{ name: string }>('SELECT name FROM collections ORDER BY name').all().map((r) => this.info(r.name));
  }

  info(name: string): CollectionInfo {
    const spec = this.requireSpec(name) as CollectionSpec & { created_at: string };
    const count = this.db.prepare<{ n: number }>('SELECT COUNT(*) AS n FROM vectors WHERE collection = ?').get(name)!.n;
    const live = this.live.get(name);
    return {
      name: spec.name,
      ...toConfig(spec),
      count,
      memory_bytes: live ? this.memoryBytes(live) : 0,
      tombstones: live?.tombstones ?? 0,
      index_lsn: live?.appliedLsn ?? 0,
      created_at: spec.created_at,
    };
  }

  async upsert(actor: Actor, name: string, items: VectorInput[]): Promise<{ upserted: number; lsn: number }> {
    const spec = this.requireSpec(name);
    this.checkBatch(items.length);
    const flat = new Float32Array(items.length * spec.dimensions);
    items.forEach((it, i) => checkVector(it.values, spec.dimensions, `vectors[${i}].values`, flat, i * spec.dimensions));
    return this.upsertBatch(actor, name, { items, flat });
  }

  /**
   * An upsert body decoded and checked against the collection's dimensions: in place when
   * small, on the decode worker when big, so the event loop never parses megabytes.
   */
  /** Upsert bodies decoded on the worker so far (the rest were small enough to decode in place). */
  get bodiesDecodedOffLoop(): number {
    return this.decoder.jobs;
  }

  async decodeUpsert(name: string, bytes: Uint8Array, msgpack: boolean, jsonDepth: number): Promise<UpsertBatch> {
    const { dimensions } = this.requireSpec(name);
    const maxBatch = this.options.maxBatch;
    if (bytes.length <= DECODE_INLINE_MAX_BYTES) return toUpsertBatch(decodeBody(bytes, msgpack, jsonDepth), dimensions, maxBatch);
    return this.decoder.run<UpsertBatch>({ op: 'vector-upsert', bytes, msgpack, jsonDepth, dimensions, maxBatch });
  }

  /**
   * A Qdrant upsert body decoded and checked (qdrant-points.ts): in place when small, on the
   * decode worker when big, like decodeUpsert.
   */
  async decodeQdrantUpsert(name: string, bytes: Uint8Array, jsonDepth: number, vectorName: string | undefined): Promise<UpsertBatch> {
    const { dimensions } = this.requireSpec(name);
    const maxBatch = this.options.maxBatch;
    if (bytes.length <= DECODE_INLINE_MAX_BYTES) return toQdrantBatch(decodeBody(bytes, false, jsonDepth), dimensions, maxBatch, vectorName);
    return this.decoder.run<UpsertBatch>({ op: 'qdrant-upsert', bytes, jsonDepth, dimensions, maxBatch, vectorName });
  }

  /**
   * `wait`: answer once the vectors are in the index too, so a query right after finds them
   * (Qdrant's wait=true); otherwise once they are committed, the index following at once.
   */
  async upsertBatch(actor: Actor, name: string, batch: UpsertBatch, options: { wait?: boolean } = {}): Promise<{ upserted: number; lsn: number }> {
    const spec = this.requireSpec(name);
    const { items, flat } = batch;
    this.checkBatch(items.length);
    const dims = spec.dimensions;
    // The collection may have been dropped and created again, with other dimensions, while the body was decoded.
    if (flat.length !== items.length * dims) throw new Conflict(`collection ${name} changed while the request was read; retry`);
    const seen = new Set<string>();
    let indexed = 0;
    items.forEach((it, i) => {
      if (seen.has(it.id)) throw new InvalidInput(`vectors[${i}]: id ${it.id} appears twice in one batch`);
      seen.add(it.id);
      // Every scalar of the metadata, and every element of a top-level array, is one indexed
      // row written inside the commit: bounded, or one request held the loop for 38 s (review).
      const rows = metaRows(it.metadata).length;
      if (rows > MAX_INDEXED_PER_VECTOR) throw new InvalidInput(`vectors[${i}].metadata has ${rows} indexed values (scalars and top-level array elements); at most ${MAX_INDEXED_PER_VECTOR}`);
      indexed += rows;
    });
    if (indexed > MAX_INDEXED_PER_UPSERT) throw new InvalidInput(`the batch has ${indexed} indexed metadata values; at most ${MAX_INDEXED_PER_UPSERT} per upsert: send fewer vectors per request`);
    const { lsn, keys } = await this.writer.write(actor, (tx) => {
      const current = this.requireSpec(name) as CollectionSpec & { next_key: number };
      if (current.dimensions !== dims) throw new Conflict(`collection ${name} changed while the request was read; retry`);
      let next = current.next_key;
      const keyOf = this.db.prepare<{ key: number }>('SELECT key FROM vectors WHERE collection = ? AND id = ?');
      const payloadItems = items.map((it, i) => ({
        id: it.id,
        key: keyOf.get(name, it.id)?.key ?? next++,
        vec: new Uint8Array(flat.buffer, flat.byteOffset + i * dims * 4, dims * 4),
        metadata: it.metadata === undefined ? null : JSON.stringify(it.metadata),
      }));
      const lsn = tx.apply(this.upserted, { collection: name, items: payloadItems, next_key: next });
      tx.audit('vectors.upsert', `collection:${name}`, { count: items.length });
      return { lsn, keys: payloadItems.map((p) => p.key) };
    });
    const inIndex = this.applyToIndex(name, (ix) => ix.add(BigUint64Array.from(keys.map(BigInt)), flat, lsn));
    if (options.wait) await inIndex;
    return { upserted: items.length, lsn };
  }

  async delete(actor: Actor, name: string, by: { ids?: string[] | undefined; filter?: Filter | undefined; where?: Where | undefined }, options: { wait?: boolean } = {}): Promise<{ deleted: number; lsn: number }> {
    this.requireSpec(name);
    if (by.ids) this.checkBatch(by.ids.length);
    const result = await this.writer.write(actor, (tx) => {
      let keys: number[];
      if (by.ids) {
        const keyOf = this.db.prepare<{ key: number }>('SELECT key FROM vectors WHERE collection = ? AND id = ?');
        keys = by.ids.map((id) => keyOf.get(name, id)?.key).filter((k): k is number => k !== undefined);
      } else {
        const where = by.where ?? compileFilter(name, by.filter);
        if (!where) throw new InvalidInput('delete needs ids or a non-empty filter');
        keys = this.db
          .prepare<{ key: number }>(`SELECT v.key FROM vectors v WHERE v.collection = ? AND ${where.sql}`)
          .all(name, ...where.params)
          .map((r) => r.key);
      }
      if (keys.length === 0) return { keys, lsn: 0 };
      const lsn = tx.apply(this.removed, { collection: name, keys });
      tx.audit('vectors.delete', `collection:${name}`, { count: keys.length });
      return { keys, lsn };
    });
    if (result.keys.length) {
      const removed = this.applyToIndex(name, (ix) => ix.remove(BigUint64Array.from(result.keys.map(BigInt)), result.lsn));
      if (options.wait) await removed;
    }
    return { deleted: result.keys.length, lsn: result.lsn };
  }

  fetch(name: string, ids: string[], includeValues = true): Array<{ id: string; values?: number[]; metadata: Record<string, unknown> | null }> {
    const spec = this.requireSpec(name);
    this.checkBatch(ids.length);
    const get = this.db.prepare<{ id: string; vec: Uint8Array; metadata: string | null }>('SELECT id, vec, metadata FROM vectors WHERE collection = ? AND id = ?');
    const out: Array<{ id: string; values?: number[]; metadata: Record<string, unknown> | null }> = [];
    for (const id of ids) {
      const row = get.get(name, id);
      if (!row) continue;
      out.push({ id: row.id, ...(includeValues ? { values: toArray(row.vec, spec.dimensions) } : {}), metadata: row.metadata ? (JSON.parse(row.metadata) as Record<string, unknown>) : null });
    }
    return out;
  }

  /**
   * Points in id order — integer ids numerically, then the others by text (Qdrant's scroll
   * order; the vectors_point_order index serves it) — after the id `after`, matching `where`.
   * `next` is the id to continue from, when there is more.
   */
  scroll(name: string, opts: { where?: Where | undefined; after?: string | undefined; limit: number; values: boolean }): { points: Stored[]; next: string | undefined } {
    const spec = this.requireSpec(name);
    const params: SqlValue[] = [name];
    let sql = `SELECT v.id, v.metadata${opts.values ? ', v.vec' : ''} FROM vectors v WHERE v.collection = ?`;
    if (opts.after !== undefined) {
      sql += " AND ((v.id GLOB '*[^0-9]*'), length(v.id), v.id) >= (?, ?, ?)";
      params.push(/[^0-9]/.test(opts.after) ? 1 : 0, opts.after.length, opts.after);
    }
    if (opts.where) {
      sql += ` AND ${opts.where.sql}`;
      params.push(...opts.where.params);
    }
    sql += " ORDER BY (v.id GLOB '*[^0-9]*'), length(v.id), v.id LIMIT ?";
    params.push(opts.limit + 1);
    const rows = this.db.prepare<{ id: string; metadata: string | null; vec?: Uint8Array }>(sql).all(...params);
    const next = rows.length > opts.limit ? rows.pop()!.id : undefined;
    return { points: rows.map((r) => stored(r, spec.dimensions)), next };
  }

  /** Whether the collection holds a vector with exactly this id. */
  has(name: string, id: string): boolean {
    return this.db.prepare<{ one: number }>('SELECT 1 AS one FROM vectors WHERE collection = ? AND id = ?').get(name, id) !== undefined;
  }

  /** How many vectors match (all of them without `where`): exact, from SQLite. */
  count(name: string, where?: Where): number {
    this.requireSpec(name);
    if (!where) return this.db.prepare<{ n: number }>('SELECT COUNT(*) AS n FROM vectors WHERE collection = ?').get(name)!.n;
    return this.db.prepare<{ n: number }>(`SELECT COUNT(*) AS n FROM vectors v WHERE v.collection = ? AND ${where.sql}`).get(name, ...where.params)!.n;
  }

  /**
   * Changes the metadata of the selected vectors (by id, or every one matching `where`) in
   * one write, leaving their values and the index alone. `change` gets a copy; null clears.
   */
  async updateMetadata(
    actor: Actor,
    name: string,
    select: { ids?: string[] | undefined; where?: Where | undefined },
    change: (metadata: Record<string, unknown> | null) => Record<string, unknown> | null,
  ): Promise<{ updated: number; lsn: number }> {
    this.requireSpec(name);
    if (select.ids) this.checkBatch(select.ids.length);
    return this.writer.write(actor, (tx) => {
      let rows: Array<{ key: number; metadata: string | null }>;
      if (select.ids) {
        const get = this.db.prepare<{ key: number; metadata: string | null }>('SELECT key, metadata FROM vectors WHERE collection = ? AND id = ?');
        rows = select.ids.map((id) => get.get(name, id)).filter((r): r is { key: number; metadata: string | null } => r !== undefined);
      } else {
        const where = select.where ?? { sql: '1', params: [] };
        rows = this.db
          .prepare<{ key: number; metadata: string | null }>(`SELECT v.key, v.metadata FROM vectors v WHERE v.collection = ? AND ${where.sql} LIMIT ?`)
          .all(name, ...where.params, MAX_METADATA_UPDATE + 1);
        if (rows.length > MAX_METADATA_UPDATE) throw new InvalidInput(`the filter selects more than ${MAX_METADATA_UPDATE} points; change their metadata in smaller sets`);
      }
      let indexed = 0;
      const items = rows.map((r) => {
        const next = change(r.metadata ? (JSON.parse(r.metadata) as Record<string, unknown>) : null);
        const metadata = next === null ? null : JSON.stringify(next);
        if (metadata !== null && metadata.length > 64 * 1024) throw new InvalidInput('metadata is limited to 64 KiB of JSON');
        const n = metaRows(next).length;
        if (n > MAX_INDEXED_PER_VECTOR) throw new InvalidInput(`the metadata would have ${n} indexed values; at most ${MAX_INDEXED_PER_VECTOR}`);
        indexed += n;
        return { key: r.key, metadata };
      });
      if (indexed > MAX_INDEXED_PER_UPSERT) throw new InvalidInput(`the change makes ${indexed} indexed metadata values; at most ${MAX_INDEXED_PER_UPSERT} per call`);
      if (items.length === 0) return { updated: 0, lsn: 0 };
      const lsn = tx.apply(this.metadataSet, { collection: name, items });
      tx.audit('vectors.set_metadata', `collection:${name}`, { count: items.length });
      return { updated: items.length, lsn };
    });
  }

  async query(name: string, q: QueryInput): Promise<{ matches: Match[]; plan: 'hnsw' | 'filtered_hnsw' | 'exact' }> {
    const started = performance.now();
    // The loaded collection's spec (immutable but for next_key): no SQLite read per query.
    const live = this.live.get(name) ?? this.requireLive(name);
    const spec = live.spec;
    const vector = checkVector(q.vector, spec.dimensions, 'vector');
    const where = q.where ?? compileFilter(name, q.filter);
    let plan: 'hnsw' | 'filtered_hnsw' | 'exact' = 'hnsw';
    let found: Array<{ key: number; distance: number }>;
    if (!where) {
      found = pairs(await live.index.search(vector, q.top_k));
    } else {
      const matching = this.db.prepare<{ n: number }>(`SELECT COUNT(*) AS n FROM vectors v WHERE v.collection = ? AND ${where.sql}`).get(name, ...where.params)!.n;
      const total = this.db.prepare<{ n: number }>('SELECT COUNT(*) AS n FROM vectors WHERE collection = ?').get(name)!.n;
      if (matching === 0) found = [];
      else if (matching <= this.options.exactSearchMax) {
        plan = 'exact';
        found = await this.exactOver(live, spec, where, name, vector, q.top_k);
      } else {
        plan = 'filtered_hnsw';
        found = await this.filteredHnsw(live, spec, where, name, vector, q.top_k, matching, total);
      }
    }
    const matches = this.describe(name, spec, found, q);
    this.events.queryDuration?.((performance.now() - started) / 1000, plan);
    return { matches, plan };
  }

  private replayChain: Promise<void> = Promise.resolve();

  /**
   * On a replica: brings the indexes up to records just replayed into SQLite, in order.
   * Collections created or dropped by the records are loaded or closed.
   */
  applyReplayed(records: ReadonlyArray<{ lsn: number; engine: string; op: string; payload: unknown }>): Promise<void> {
    for (const r of records) {
      if (r.engine !== 'vectors') continue;
      this.replayChain = this.replayChain.then(async () => {
        if (r.op === 'create_collection') {
          const spec = r.payload as CollectionSpec;
          this.removeFiles(spec.name);
          if (!this.live.has(spec.name)) await this.load(spec);
        } else if (r.op === 'drop_collection') {
          const name = (r.payload as { name: string }).name;
          const live = this.live.get(name);
          this.live.delete(name);
          await live?.index.close();
          this.removeFiles(name);
        } else if (r.op === 'upsert') {
          const p = r.payload as UpsertPayload;
          const spec = this.live.get(p.collection)?.spec;
          if (!spec) return;
          const flat = flatten(p.items.map((it) => it.vec), spec.dimensions);
          this.applyToIndex(p.collection, (ix) => ix.add(BigUint64Array.from(p.items.map((it) => BigInt(it.key))), flat, r.lsn));
        } else if (r.op === 'delete') {
          const p = r.payload as { collection: string; keys: number[] };
          this.applyToIndex(p.collection, (ix) => ix.remove(BigUint64Array.from(p.keys.map(BigInt)), r.lsn));
        }
      }).catch((err: unknown) => {
        // One failed step must not stop every later one (a rejected chain would skip them all).
        this.events.log?.('applying a replicated vector change to the index failed; the next start rebuilds it', { lsn: r.lsn, err: String(err) });
      });
    }
    return this.replayChain;
  }

  /** After a bootstrap replaced SQLite underneath: every index is rebuilt from the new rows. */
  async reloadAll(): Promise<void> {
    await this.replayChain;
    for (const [name, live] of [...this.live]) {
      this.live.delete(name);
      await live.index.close();
      await live.building?.close();
    }
    // Files of any era before the bootstrap are someone else's history now.
    for (const f of readdirSync(this.options.indexDir)) if (f.includes('.usearch')) rmSync(join(this.options.indexDir, f), { force: true });
    await this.open();
  }

  /** Saves every index that changed since its last save (a background job; also on close). */
  async saveAll(): Promise<void> {
    // Every vector change up to the log's end has been sent to the indexes — on a replica,
    // once the replay steps queued so far have run (`upTo` is read before queueing, so no
    // record past it is claimed) — so each index may say it holds the log up to there.
    const upTo = this.writer.lastLsn;
    this.replayChain = this.replayChain
      .then(async () => {
        for (const live of this.live.values()) {
          const s = await live.index.remove(new BigUint64Array(0), upTo).then(() => live.index.stats());
          live.appliedLsn = s.lsn;
        }
      })
      .catch((err: unknown) => this.events.log?.('moving the vector indexes to the log position failed', { err: String(err) }));
    await this.replayChain;
    for (const [name, live] of this.live) {
      if (live.appliedLsn === live.savedLsn && existsSync(this.file(name))) continue;
      const saved = await live.index.save(this.file(name));
      live.savedLsn = saved.lsn;
      live.savedBytes = saved.bytes;
      live.savedSize = saved.size;
    }
  }

  /** Rebuilds indexes whose tombstones passed the threshold, one at a time, without pausing queries. */
  async compactIfNeeded(): Promise<string[]> {
    const done: string[] = [];
    for (const [name, live] of [...this.live]) {
      const ratio = live.tombstones / Math.max(1, live.size + live.tombstones);
      if (live.building || live.tombstones === 0 || ratio < this.options.compactRatio) continue;
      await this.compact(name);
      done.push(name);
    }
    return done;
  }

  async compact(name: string): Promise<void> {
    const live = this.requireLive(name);
    const fresh = new VectorIndex();
    await fresh.init(toConfig(live.spec));
    // From here on every committed change also goes to the new index, after the rows read so
    // far: a row read before a change is corrected by that change, one read after already has it.
    live.building = fresh;
    const lsn = this.writer.lastLsn;
    await this.bulkLoad(name, live.spec, fresh, lsn);
    const stats = await fresh.stats();
    const old = live.index;
    live.index = fresh;
    live.building = undefined;
    live.tombstones = stats.tombstones;
    live.size = stats.size;
    await old.close();
    this.events.log?.('vector index compacted', { collection: name, size: stats.size });
  }

  async stats(name: string) {
    const live = this.requireLive(name);
    return live.index.stats();
  }

  async close(): Promise<void> {
    try {
      await this.decoder.close();
      await this.saveAll();
    } finally {
      for (const live of this.live.values()) {
        await live.index.close();
        await live.building?.close();
      }
      this.live.clear();
    }
  }

  // --- internals ---

  private async exactOver(live: Live, spec: CollectionSpec, where: { sql: string; params: SqlValue[] }, name: string, vector: Float32Array, k: number) {
    const rows = this.db
      .prepare<{ key: number; vec: Uint8Array }>(`SELECT v.key, v.vec FROM vectors v WHERE v.collection = ? AND ${where.sql}`)
      .all(name, ...where.params);
    const dataset = flatten(rows.map((r) => r.vec), spec.dimensions);
    return pairs(await live.index.exact(BigUint64Array.from(rows.map((r) => BigInt(r.key))), dataset, vector, k));
  }

  private async filteredHnsw(live: Live, spec: CollectionSpec, where: { sql: string; params: SqlValue[] }, name: string, vector: Float32Array, k: number, matching: number, total: number) {
    // Expect `matching / total` of the candidates to pass; ask for enough, with a margin.
    let want = Math.min(total, Math.ceil((k * total) / matching) * 2 + 16);
    for (;;) {
      const candidates = pairs(await live.index.search(vector, want));
      const passing = this.passing(name, where, candidates.map((c) => c.key));
      const kept = candidates.filter((c) => passing.has(c.key));
      if (kept.length >= k) return kept.slice(0, k);
      if (want >= total + live.tombstones) break;
      want = Math.min(total + live.tombstones, want * 2);
    }
    // HNSW could not produce enough matches even asked for everything: the exact answer.
    return this.exactOver(live, spec, where, name, vector, k);
  }

  private passing(name: string, where: { sql: string; params: SqlValue[] }, keys: number[]): Set<number> {
    const out = new Set<number>();
    for (let i = 0; i < keys.length; i += 500) {
      const chunk = keys.slice(i, i + 500);
      for (const r of this.db
        .prepare<{ key: number }>(`SELECT v.key FROM vectors v WHERE v.collection = ? AND v.key IN (${chunk.map(() => '?').join(',')}) AND ${where.sql}`)
        .all(name, ...chunk, ...where.params)) {
        out.add(r.key);
      }
    }
    return out;
  }

  private describe(name: string, spec: CollectionSpec, found: Array<{ key: number; distance: number }>, q: QueryInput): Match[] {
    if (found.length === 0) return [];
    const rows = new Map<number, { id: string; vec: Uint8Array; metadata: string | null }>();
    const cols = q.include_values ? 'key, id, vec, metadata' : 'key, id, metadata';
    // In chunks: SQLite binds at most 32,766 variables, and a compatible API may ask for more results (review: a 500).
    for (let i = 0; i < found.length; i += 500) {
      const chunk = found.slice(i, i + 500);
      for (const r of this.db
        .prepare<{ key: number; id: string; vec: Uint8Array; metadata: string | null }>(`SELECT ${cols} FROM vectors WHERE collection = ? AND key IN (${chunk.map(() => '?').join(',')})`)
        .all(name, ...chunk.map((f) => f.key))) {
        rows.set(r.key, r);
      }
    }
    const out: Match[] = [];
    for (const f of found) {
      const r = rows.get(f.key);
      // A key the index still returns but SQLite no longer has was deleted meanwhile.
      if (!r) continue;
      const m: Match = { id: r.id, score: score(spec.metric, f.distance) };
      if (q.include_metadata) m.metadata = r.metadata ? (JSON.parse(r.metadata) as Record<string, unknown>) : null;
      if (q.include_values) m.values = toArray(r.vec, spec.dimensions);
      out.push(m);
    }
    return out;
  }

  /** Sends a committed change to the index (and to a rebuild in progress), in commit order. */
  private applyToIndex(name: string, change: (ix: VectorIndex) => Promise<{ size: number }>): Promise<void> {
    const live = this.live.get(name);
    if (!live) return Promise.resolve();
    let done: Promise<void> = Promise.resolve();
    for (const ix of live.building ? [live.index, live.building] : [live.index]) {
      const applied = change(ix).then(
        () => undefined,
        (err: unknown) => this.events.log?.('vector index update failed; the next start rebuilds it', { collection: name, err: String(err) }),
      );
      if (ix === live.index) done = applied;
    }
    void live.index.stats().then((s) => {
      live.tombstones = s.tombstones;
      live.size = s.size;
      live.appliedLsn = s.lsn;
    }, () => undefined);
    return done;
  }

  private async load(spec: CollectionSpec): Promise<void> {
    const file = this.file(spec.name);
    let index = new VectorIndex();
    let fromLsn = -1;
    const side = readSidecar(`${file}.json`);
    if (side && existsSync(file)) {
      try {
        await index.init(toConfig(spec), { path: file, sha256: side.sha256 ?? '', lsn: side.lsn, tombstones: side.tombstones });
        fromLsn = side.lsn;
        // A drop or re-create after the file was saved makes it another collection's index
        // (a crash between that commit and the file's removal can leave one behind).
        const recreated = this.db
          .prepare<{ payload: Uint8Array }>("SELECT payload FROM changelog WHERE lsn > ? AND engine = 'vectors' AND op IN ('create_collection', 'drop_collection')")
          .all(side.lsn)
          .some((r) => (unpack(r.payload) as { name?: string }).name === spec.name);
        if (recreated) fromLsn = -1;
        // An index ahead of the database (restored from an older snapshot) holds vectors SQLite does not.
        if (side.lsn > this.changes.lastLsn()) fromLsn = -1;
        // The records between the file and now must still be in the log to be replayed.
        const oldest = this.changes.oldestLsn();
        if (oldest > 0 && side.lsn < oldest - 1) fromLsn = -1;
      } catch (err) {
        this.events.log?.('vector index file unreadable; rebuilding from SQLite', { collection: spec.name, err: String(err) });
        fromLsn = -1;
      }
    } else if (existsSync(file) || side) {
      this.events.log?.('vector index file incomplete; rebuilding from SQLite', { collection: spec.name });
    }
    const live: Live = { spec, index, tombstones: 0, size: 0, savedLsn: -1, savedBytes: 0, savedSize: 0, appliedLsn: 0 };
    if (fromLsn >= 0) {
      live.savedLsn = fromLsn;
      live.savedBytes = side!.bytes;
      live.savedSize = side!.size;
      await this.replay(spec, index, fromLsn);
      // The index now holds the whole log, not only up to its last vector record.
      await index.remove(new BigUint64Array(0), this.writer.lastLsn);
    } else {
      await index.close();
      index = new VectorIndex();
      await index.init(toConfig(spec));
      live.index = index;
      if (existsSync(file) || side) this.events.log?.('rebuilding vector index from SQLite', { collection: spec.name });
      await this.bulkLoad(spec.name, spec, index, this.writer.lastLsn);
    }
    const s = await index.stats();
    live.size = s.size;
    live.tombstones = s.tombstones;
    live.appliedLsn = s.lsn;
    this.live.set(spec.name, live);
  }

  /** Applies the collection's logged changes after `afterLsn` to a loaded index. */
  private async replay(spec: CollectionSpec, index: VectorIndex, afterLsn: number): Promise<void> {
    let lsn = afterLsn;
    for (;;) {
      const records = this.changes.readEngineAfter('vectors', lsn, 500);
      if (records.length === 0) return;
      for (const r of records) {
        lsn = r.lsn;
        if (r.op === 'upsert') {
          const p = r.payload as UpsertPayload;
          if (p.collection !== spec.name) continue;
          const flat = flatten(p.items.map((it) => it.vec), spec.dimensions);
          await index.add(BigUint64Array.from(p.items.map((it) => BigInt(it.key))), flat, r.lsn);
        } else if (r.op === 'delete') {
          const p = r.payload as { collection: string; keys: number[] };
          if (p.collection === spec.name) await index.remove(BigUint64Array.from(p.keys.map(BigInt)), r.lsn);
        }
      }
    }
  }

  /** Streams a collection's vectors from SQLite into an index, in batches sent in key order. */
  private async bulkLoad(name: string, spec: CollectionSpec, index: VectorIndex, lsn: number): Promise<void> {
    const page = this.db.prepare<{ key: number; vec: Uint8Array }>('SELECT key, vec FROM vectors WHERE collection = ? AND key > ? ORDER BY key LIMIT 1000');
    let after = 0;
    for (;;) {
      const rows = page.all(name, after);
      if (rows.length === 0) break;
      const flat = flatten(rows.map((r) => r.vec), spec.dimensions);
      after = rows[rows.length - 1]!.key;
      // Awaiting each batch bounds memory and lets requests run between batches.
      await index.add(BigUint64Array.from(rows.map((r) => BigInt(r.key))), flat, lsn);
    }
    // Mark the index as including everything committed when the load began.
    await index.remove(new BigUint64Array(0), lsn);
  }

  private memoryBytes(live: Live): number {
    if (live.savedSize > 0) return Math.round((live.savedBytes / live.savedSize) * (live.size + live.tombstones));
    // Not saved yet: vectors at the index's precision plus the graph's links.
    const perVector = live.spec.dimensions * BYTES[live.spec.dtype] + live.spec.connectivity * 2 * 4 + 32;
    return (live.size + live.tombstones) * perVector;
  }

  private file(name: string): string {
    return join(this.options.indexDir, `${name}.usearch`);
  }

  private removeFiles(name: string): void {
    for (const f of [this.file(name), `${this.file(name)}.json`, `${this.file(name)}.tmp`]) rmSync(f, { force: true });
  }

  private specOf(name: string): (CollectionSpec & { next_key: number; created_at: string; props: string }) | undefined {
    return this.db.prepare<CollectionSpec & { next_key: number; created_at: string; props: string }>('SELECT * FROM collections WHERE name = ?').get(name);
  }

  private requireSpec(name: string) {
    const spec = this.specOf(name);
    if (!spec) throw new NotFound(`collection ${name} does not exist`);
    return spec;
  }

  private requireLive(name: string): Live {
    this.requireSpec(name);
    const live = this.live.get(name);
    if (!live) throw new NotFound(`collection ${name} is not loaded`);
    return live;
  }

  private checkBatch(n: number): void {
    if (n === 0) throw new InvalidInput('the batch is empty');
    if (n > this.options.maxBatch) throw new InvalidInput(`at most ${this.options.maxBatch} items per call (vectors.max_batch)`);
  }

}

/** Stored float32 rows (little-endian blobs) as one n × dims matrix for the index worker. */
function flatten(vecs: Uint8Array[], dims: number): Float32Array {
  const flat = new Float32Array(vecs.length * dims);
  const bytes = new Uint8Array(flat.buffer);
  vecs.forEach((v, i) => bytes.set(v, i * dims * 4));
  return flat;
}

function toConfig(spec: CollectionSpec): IndexConfig {
  return {
    dimensions: spec.dimensions,
    metric: spec.metric,
    dtype: spec.dtype,
    connectivity: spec.connectivity,
    expansion_add: spec.expansion_add,
    expansion_search: spec.expansion_search,
  };
}

function pairs(r: { keys: BigUint64Array; distances: Float32Array }): Array<{ key: number; distance: number }> {
  return Array.from(r.keys, (k, i) => ({ key: Number(k), distance: r.distances[i]! }));
}

/** Higher is better for cos (similarity) and ip (dot product); l2 answers the squared distance. */
function score(metric: Metric, distance: number): number {
  return metric === 'l2' ? distance : 1 - distance;
}

function stored(r: { id: string; metadata: string | null; vec?: Uint8Array | undefined }, dims: number): Stored {
  const out: Stored = { id: r.id, metadata: r.metadata ? (JSON.parse(r.metadata) as Record<string, unknown>) : null };
  if (r.vec) out.values = toArray(r.vec, dims);
  return out;
}

function toArray(buf: Uint8Array, dims: number): number[] {
  return Array.from(new Float32Array(Uint8Array.from(buf).buffer, 0, dims));
}

function readSidecar(path: string): { lsn: number; size: number; bytes: number; sha256?: string; dimensions: number; tombstones?: number } | undefined {
  try {
    const s = JSON.parse(readFileSync(path, 'utf8')) as { lsn: number; size: number; bytes: number; sha256?: string; dimensions: number; tombstones?: number };
    return typeof s.lsn === 'number' ? s : undefined;
  } catch {
    return undefined;
  }
}
