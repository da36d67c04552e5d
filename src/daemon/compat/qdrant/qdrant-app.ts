import { Hono, type Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { Conflict, InvalidInput, isOutOfSpace, NotFound, RateLimited, StrataError, Unauthorized } from '../../../engines/errors.js';
import { checkVector } from '../../../engines/vectors/upsert-batch.js';
import type { CollectionSpec, Match, Metric, Where } from '../../../engines/vectors/vector-store.js';
import type { Caller } from '../../app-env.js';
import { actorOf, authorize } from '../../auth.js';
import { readJsonBody, readRawBody } from '../../json-body.js';
import { STATUS } from '../../http-error.js';
import { RateLimiter } from '../../rate-limiter.js';
import type { StrataNode } from '../../strata-node.js';
import { Slices } from '../slices.js';
import { VERSION } from '../../version.js';
import { compileQdrantFilter } from './qdrant-filter.js';
import { pointId, wireId } from './point-id.js';
import { vectorOf } from './qdrant-points.js';

// A Qdrant-compatible REST API (issue 18) over the vector engine, on its own listener
// (qdrant.listen, 6333 by convention), so that @qdrant/js-client-rest, qdrant-client and the
// RAG frameworks built on them (LangChain, LlamaIndex, Haystack) work with only their url and
// api-key settings. A Qdrant collection is a Strata collection; a point is a vector whose id is
// the point id (point-id.ts) and whose metadata is the payload; filters compile to the same
// planner the native API uses (qdrant-filter.ts). Roles: reads need a role that may read
// shared data (admin, service, reader), writes a service or admin token — as natively.
//
// Answers use Qdrant's envelope `{result, status: "ok", time}`; errors `{status: {error},
// time}` with Qdrant's codes (404 missing collection, 409 existing, 400 bad input). The JS
// client treats only 200 and 201 as success, so nothing else is ever a success here.

/** The Qdrant version announced at GET /: the JS client warns when its minor differs by more than one. */
export const QDRANT_VERSION = '1.18.0';

const DISTANCES: Record<string, Metric> = { Cosine: 'cos', Euclid: 'l2', Dot: 'ip' };
const DISTANCE_OF: Record<Metric, string> = { cos: 'Cosine', l2: 'Euclid', ip: 'Dot' };
const COLLECTION = /^[a-z0-9][a-z0-9_-]{0,62}$/;

type Json = Record<string, unknown>;

export function createQdrantApp(node: StrataNode): Hono {
  const app = new Hono();
  const { vectors } = node;
  const limits = { bytes: node.config.server.max_body_bytes, jsonDepth: node.config.security.max_json_depth };
  const rate = node.config.security.rate_limit;
  const limiter = new RateLimiter(rate.requests_per_second, rate.burst, () => node.metrics.rateLimited.inc());

  type Handler = (c: Context, caller: Caller, started: number) => Promise<Response> | Response;

  /** One route: authenticate (api-key or bearer), authorize, run, answer in the envelope, count and log. */
  const route = (method: 'get' | 'put' | 'post' | 'delete' | 'patch', path: string, access: 'shared' | 'service', handler: Handler) => {
    const label = `qdrant:${method.toUpperCase()} ${path}`;
    app.on(method.toUpperCase(), path, async (c) => {
      const started = performance.now();
      let tokenId: string | undefined;
      let response: Response;
      try {
        const caller = authenticate(c);
        tokenId = caller.tokenId;
        limiter.take(caller.tokenId);
        authorize(caller, access);
        response = await handler(c, caller, started);
      } catch (err) {
        response = failure(c, err, started);
      }
      const seconds = (performance.now() - started) / 1000;
      node.metrics.observeRequest(method.toUpperCase(), label, response.status, seconds);
      node.requestLog.write({ reqId: '', method: method.toUpperCase(), route: label, status: response.status, ms: Math.round(seconds * 1e4) / 10, tokenId });
      if (node.draining) response.headers.set('Connection', 'close');
      return response;
    });
  };

  const authenticate = (c: Context): Caller => {
    const key = c.req.header('api-key');
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '')?.[1];
    const token = key ?? bearer;
    if (!token) {
      node.authFailed('missing');
      throw new Unauthorized('Must provide an API key or an Authorization bearer token');
    }
    const info = node.tokens.authenticate(token);
    if (!info) {
      node.authFailed('invalid');
      throw new Unauthorized('Invalid API key or token');
    }
    return { tokenId: info.id, role: info.role, userId: info.user_id };
  };

  const failure = (c: Context, err: unknown, started: number): Response => {
    if (!(err instanceof StrataError) && isOutOfSpace(err)) return envelopeError(c, "the server's disk is full", 507, started);
    if (err instanceof StrataError) {
      if (err.code === 'rate_limited') c.header('Retry-After', String((err as RateLimited).details?.retry_after_seconds ?? 1));
      if (err.code === 'internal') node.log.error({ err }, 'qdrant request failed');
      return envelopeError(c, err.message, STATUS[err.code], started);
    }
    node.log.error({ err }, 'qdrant request failed');
    return envelopeError(c, 'Service internal error: see the server log', 500, started);
  };

  const body = async (c: Context): Promise<Json> => {
    const b = await readJsonBody(c, limits);
    if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new InvalidInput('Format error in JSON body: expected an object');
    return b as Json;
  };

  /** The collection's name from the path, checked, and its spec (404 in Qdrant's words when missing). */
  const collection = (c: Context) => {
    const name = c.req.param('name')!;
    try {
      if (!COLLECTION.test(name)) throw new NotFound('');
      const info = vectors.spec(name);
      return { name, info, vectorName: info.props.vector_name };
    } catch (err) {
      if (err instanceof NotFound) throw new NotFound(`Not found: Collection \`${name}\` doesn't exist!`);
      throw err;
    }
  };

  /**
   * The stored id a request names: an id a vector holds verbatim (one created natively, like
   * "doc-1", or a cursor this API handed out) as it is, else the canonical point id. So every
   * id a listing shows can be read, deleted and paged from (review: such ids were refused or
   * skipped).
   */
  const storedId = (name: string, raw: unknown, where: string): string => {
    if (typeof raw === 'string' && vectors.has(name, raw)) return raw;
    return pointId(raw, where);
  };
  const storedIds = (name: string, raw: unknown[], where: string) => {
    if (raw.length > node.config.vectors.max_batch) throw new InvalidInput(`Wrong input: at most ${node.config.vectors.max_batch} ids per call (vectors.max_batch)`);
    return raw.map((id, i) => storedId(name, id, `${where}[${i}]`));
  };

  // --- service ---

  app.get('/', (c) => c.json({ title: 'qdrant - vector search engine (Strata compatible API)', version: QDRANT_VERSION, commit: VERSION }));
  for (const p of ['/healthz', '/livez', '/readyz']) app.get(p, (c) => c.text('healthz check passed'));

  // --- collections ---

  route('get', '/collections', 'shared', (c, _caller, t) => ok(c, { collections: vectors.list().map((x) => ({ name: x.name })) }, t));

  route('get', '/collections/:name/exists', 'shared', (c, _caller, t) => {
    const name = c.req.param('name')!;
    let exists = COLLECTION.test(name);
    if (exists) {
      try {
        vectors.info(name);
      } catch (err) {
        if (!(err instanceof NotFound)) throw err;
        exists = false;
      }
    }
    return ok(c, { exists }, t);
  });

  route('get', '/collections/:name', 'shared', (c, _caller, t) => {
    const { name, vectorName, info: { props } } = collection(c);
    // The count (info's) only here: every other route reads the spec alone.
    const info = vectors.info(name);
    const params = { size: info.dimensions, distance: DISTANCE_OF[info.metric] };
    const hnsw = { m: info.connectivity, ef_construct: info.expansion_add, full_scan_threshold: node.config.vectors.exact_search_max, max_indexing_threads: 0, on_disk: false };
    return ok(
      c,
      {
        status: 'green',
        optimizer_status: 'ok',
        indexed_vectors_count: info.count,
        points_count: info.count,
        segments_count: 1,
        config: {
          params: { vectors: vectorName === undefined ? params : { [vectorName]: params }, shard_number: 1, replication_factor: 1, write_consistency_factor: 1, on_disk_payload: false },
          hnsw_config: hnsw,
          optimizer_config: { deleted_threshold: node.config.vectors.compact_tombstone_ratio, vacuum_min_vector_number: 1000, default_segment_number: 1, max_segment_size: null, memmap_threshold: null, indexing_threshold: 0, flush_interval_sec: 5, max_optimization_threads: 1 },
          wal_config: { wal_capacity_mb: 32, wal_segments_ahead: 0 },
          quantization_config: null,
          strict_mode_config: { enabled: false },
        },
        payload_schema: props.payload_schema ?? {},
      },
      t,
    );
  });

  route('put', '/collections/:name', 'service', async (c, caller, t) => {
    const name = c.req.param('name')!;
    const b = await body(c);
    if (!COLLECTION.test(name)) throw new InvalidInput(`Wrong input: collection names here are 1-63 lower-case letters, digits, _ and - ("${name.slice(0, 80)}" is not)`);
    for (const k of Object.keys(b)) if (b[k] !== null && !CREATE_KEYS.has(k)) throw new InvalidInput(`Wrong input: ${k} is not supported by Strata's Qdrant API`);
    if (b.sparse_vectors) throw new InvalidInput('Wrong input: sparse vectors are not supported');
    let v = object(b.vectors, 'vectors');
    let vectorName: string | undefined;
    if (!('size' in v)) {
      const names = Object.keys(v);
      if (names.length !== 1 || names[0] !== '') throw new InvalidInput('Wrong input: Strata collections hold one vector: {size, distance} or the unnamed {"": {size, distance}} form');
      vectorName = '';
      v = object(v[''], 'vectors[""]');
    }
    for (const k of Object.keys(v)) if (v[k] !== null && !['size', 'distance', 'on_disk', 'hnsw_config', 'datatype', 'quantization_config', 'multivector_config'].includes(k)) throw new InvalidInput(`Wrong input: vectors.${k} is not supported`);
    if (v.multivector_config) throw new InvalidInput('Wrong input: multivectors are not supported');
    const size = v.size;
    if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > node.config.vectors.max_dimensions) throw new InvalidInput(`Wrong input: vectors.size must be an integer from 1 to ${node.config.vectors.max_dimensions}`);
    const metric = DISTANCES[String(v.distance)];
    if (!metric) throw new InvalidInput(`Wrong input: distance ${JSON.stringify(v.distance)} is not supported (Cosine, Euclid, Dot)`);
    const dtype = v.datatype === 'float16' ? 'f16' : v.datatype === 'uint8' ? 'i8' : 'f32';
    const hnsw = { ...(b.hnsw_config as Json | undefined), ...(v.hnsw_config as Json | undefined) };
    const d = node.config.vectors.defaults;
    const spec: CollectionSpec = {
      name,
      dimensions: size,
      metric,
      dtype,
      connectivity: intIn(hnsw.m, 2, 256, d.connectivity, 'hnsw_config.m'),
      expansion_add: intIn(hnsw.ef_construct, 1, 4096, d.expansion_add, 'hnsw_config.ef_construct'),
      expansion_search: d.expansion_search,
    };
    try {
      await vectors.createCollection(actorOf(caller), spec, vectorName === undefined ? {} : { vector_name: vectorName });
    } catch (err) {
      if (err instanceof Conflict) throw new Conflict(`Wrong input: Collection \`${name}\` already exists!`);
      throw err;
    }
    return ok(c, true, t);
  });

  // Collection parameters are fixed at creation; an update that changes nothing is accepted.
  route('patch', '/collections/:name', 'service', async (c, _caller, t) => {
    collection(c);
    const b = await body(c);
    const set = Object.keys(b).filter((k) => b[k] !== null && !(typeof b[k] === 'object' && Object.keys(b[k] as Json).length === 0));
    if (set.length) throw new InvalidInput(`Wrong input: Strata cannot change ${set.join(', ')} of an existing collection`);
    return ok(c, true, t);
  });

  route('delete', '/collections/:name', 'service', async (c, caller, t) => {
    const name = c.req.param('name')!;
    if (!COLLECTION.test(name)) return ok(c, false, t);
    try {
      await vectors.deleteCollection(actorOf(caller), name);
    } catch (err) {
      if (err instanceof NotFound) return ok(c, false, t);
      throw err;
    }
    return ok(c, true, t);
  });

  // Every payload field is indexed already (vector_meta); a declared index is remembered so the
  // collection info shows it, as clients that create indexes expect.
  route('put', '/collections/:name/index', 'service', async (c, caller, t) => {
    const { name, info } = collection(c);
    const b = await body(c);
    // Checked like a filter key, the schema a known type with small params, and at most
    // MAX_PAYLOAD_INDEXES of them: the declarations are read on every request (review: 3 MiB
    // schemas made each search 30× slower).
    if (typeof b.field_name !== 'string') throw new InvalidInput('Wrong input: field_name must be a payload key');
    compileQdrantFilter(name, { must: [{ is_null: { key: b.field_name } }] });
    const type = typeof b.field_schema === 'string' ? b.field_schema : typeof b.field_schema === 'object' && b.field_schema !== null ? (b.field_schema as Json).type : 'keyword';
    if (typeof type !== 'string' || !PAYLOAD_TYPES.has(type)) throw new InvalidInput(`Wrong input: field_schema must be one of ${[...PAYLOAD_TYPES].join(', ')}`);
    if (typeof b.field_schema === 'object' && JSON.stringify(b.field_schema).length > 1024) throw new InvalidInput('Wrong input: field_schema params are at most 1 KiB of JSON');
    const schema = typeof b.field_schema === 'object' && b.field_schema !== null ? { data_type: type, params: b.field_schema, points: 0 } : { data_type: type, points: 0 };
    const declared = Object.keys(info.props.payload_schema ?? {});
    if (!declared.includes(b.field_name) && declared.length >= MAX_PAYLOAD_INDEXES) throw new InvalidInput(`Wrong input: at most ${MAX_PAYLOAD_INDEXES} payload indexes per collection (every field is indexed anyway)`);
    const lsn = await vectors.updateProps(actorOf(caller), name, (p) => ({ ...p, payload_schema: { ...p.payload_schema, [b.field_name as string]: schema } }));
    return ok(c, { operation_id: lsn, status: 'completed' }, t);
  });

  route('delete', '/collections/:name/index/:field', 'service', async (c, caller, t) => {
    const { name } = collection(c);
    const field = c.req.param('field')!;
    const lsn = await vectors.updateProps(actorOf(caller), name, (p) => {
      const schema = { ...p.payload_schema };
      delete schema[field];
      return { ...p, payload_schema: schema };
    });
    return ok(c, { operation_id: lsn, status: 'completed' }, t);
  });

  // --- points ---

  route('put', '/collections/:name/points', 'service', async (c, caller, t) => {
    const { name, vectorName } = collection(c);
    const wait = c.req.query('wait') === 'true';
    // Decoded and checked off the event loop when big (VectorStore.decodeQdrantUpsert).
    const raw = await readRawBody(c, limits, false);
    const batch = await vectors.decodeQdrantUpsert(name, raw.bytes, limits.jsonDepth, vectorName);
    if (batch.items.length === 0) return ok(c, { operation_id: 0, status: 'completed' }, t);
    const r = await vectors.upsertBatch(actorOf(caller), name, batch, { wait });
    return ok(c, { operation_id: r.lsn, status: wait ? 'completed' : 'acknowledged' }, t);
  });

  route('post', '/collections/:name/points', 'shared', async (c, _caller, t) => {
    const { name, vectorName } = collection(c);
    const b = await body(c);
    if (!Array.isArray(b.ids)) throw new InvalidInput('Format error in JSON body: expected ids');
    const ids = storedIds(name, b.ids, 'ids');
    const shape = shaper(b.with_payload ?? true, b.with_vector ?? false, vectorName);
    if (ids.length === 0) return ok(c, [], t);
    return ok(c, vectors.fetch(name, [...new Set(ids)], shape.values).map((p) => shape.point(p)), t);
  });

  route('get', '/collections/:name/points/:id', 'shared', (c, _caller, t) => {
    const { name, vectorName } = collection(c);
    const raw = c.req.param('id')!;
    const id = vectors.has(name, raw) ? raw : pointId(/^\d+$/.test(raw) ? Number(raw) : raw, 'id');
    const found = vectors.fetch(name, [id], true)[0];
    if (!found) throw new NotFound(`Not found: No point with id ${raw} found`);
    return ok(c, shaper(true, true, vectorName).point(found), t);
  });

  route('post', '/collections/:name/points/delete', 'service', async (c, caller, t) => {
    const { name, vectorName } = collection(c);
    const b = await body(c);
    const wait = c.req.query('wait') === 'true';
    const r = await vectors.delete(actorOf(caller), name, selector(b, name, vectorName, storedIds), { wait });
    return ok(c, { operation_id: r.lsn, status: wait ? 'completed' : 'acknowledged' }, t);
  });

  const payloadRoute = (method: 'post' | 'put', path: string, change: (b: Json) => (m: Json | null) => Json | null) =>
    route(method, path, 'service', async (c, caller, t) => {
      const { name, vectorName } = collection(c);
      const b = await body(c);
      const update = change(b);
      const r = await vectors.updateMetadata(actorOf(caller), name, selector(b, name, vectorName, storedIds), update);
      return ok(c, { operation_id: r.lsn, status: 'completed' }, t);
    });

  const payloadOf = (b: Json): Json => {
    if (b.key !== undefined && b.key !== null) throw new InvalidInput('Wrong input: setting a payload under a nested key is not supported; send the whole top-level value');
    return dropUndefined(object(b.payload, 'payload'));
  };
  payloadRoute('post', '/collections/:name/points/payload', (b) => {
    const payload = payloadOf(b);
    return (m) => ({ ...m, ...payload });
  });
  payloadRoute('put', '/collections/:name/points/payload', (b) => {
    const payload = payloadOf(b);
    return () => payload;
  });
  payloadRoute('post', '/collections/:name/points/payload/delete', (b) => {
    if (!Array.isArray(b.keys) || b.keys.some((k) => typeof k !== 'string')) throw new InvalidInput('Format error in JSON body: keys must be a list of payload keys');
    const keys = b.keys as string[];
    return (m) => {
      if (!m) return m;
      const out = structuredClone(m);
      for (const k of keys) deletePath(out, k);
      return out;
    };
  });
  payloadRoute('post', '/collections/:name/points/payload/clear', () => () => null);

  route('post', '/collections/:name/points/scroll', 'shared', async (c, _caller, t) => {
    const { name, vectorName } = collection(c);
    const b = await body(c);
    if (b.order_by !== undefined && b.order_by !== null) throw new InvalidInput('Wrong input: order_by is not supported; points are scrolled by id');
    const limit = intIn(b.limit, 1, 10_000, 10, 'limit');
    const shape = shaper(b.with_payload ?? true, b.with_vector ?? false, vectorName);
    const after = b.offset === undefined || b.offset === null ? undefined : storedId(name, b.offset, 'offset');
    const page = vectors.scroll(name, { where: compileQdrantFilter(name, b.filter, vectorName), after, limit, values: shape.values });
    return ok(c, { points: page.points.map((p) => shape.point(p)), next_page_offset: page.next === undefined ? null : wireId(page.next) }, t);
  });

  route('post', '/collections/:name/points/count', 'shared', async (c, _caller, t) => {
    const { name, vectorName } = collection(c);
    const b = await body(c);
    return ok(c, { count: vectors.count(name, compileQdrantFilter(name, b.filter, vectorName)) }, t);
  });

  /** One nearest-neighbour search in Qdrant's terms, answered as ScoredPoints. */
  const search = async (name: string, metric: Metric, vectorName: string | undefined, s: Json, vector: unknown) => {
    const limit = intIn(s.limit, 1, 10_000, 10, 'limit');
    const offset = intIn(s.offset, 0, 100_000, 0, 'offset');
    const shape = shaper(s.with_payload ?? false, s.with_vector ?? false, vectorName);
    const where: Where | undefined = compileQdrantFilter(name, s.filter, vectorName);
    const threshold = s.score_threshold;
    if (threshold !== undefined && threshold !== null && (typeof threshold !== 'number' || !Number.isFinite(threshold))) throw new InvalidInput('Wrong input: score_threshold must be a number');
    const { matches } = await vectors.query(name, { vector: vector as number[], top_k: limit + offset, where, include_metadata: shape.payload !== false, include_values: shape.values });
    const out: Json[] = [];
    for (const m of matches.slice(offset)) {
      const score = qdrantScore(metric, m.score);
      if (typeof threshold === 'number' && (metric === 'l2' ? score > threshold : score < threshold)) continue;
      out.push({ ...shape.point({ id: m.id, metadata: m.metadata ?? null, ...(m.values ? { values: m.values } : {}) }), version: 0, score });
    }
    return out;
  };

  const searchBody = async (name: string, info: { metric: Metric }, vectorName: string | undefined, s: Json) => {
    const vector = s.vector;
    let values: unknown = vector;
    if (typeof vector === 'object' && vector !== null && !Array.isArray(vector)) {
      const named = vector as Json;
      if (named.name !== (vectorName ?? '') && !(vectorName === undefined && named.name === '')) throw new InvalidInput(`Wrong input: Not existing vector name error: ${String(named.name)}`);
      values = named.vector;
    }
    return search(name, info.metric, vectorName, s, values);
  };

  route('post', '/collections/:name/points/search', 'shared', async (c, _caller, t) => {
    const { name, info, vectorName } = collection(c);
    return ok(c, await searchBody(name, info, vectorName, await body(c)), t);
  });

  route('post', '/collections/:name/points/search/batch', 'shared', async (c, _caller, t) => {
    const { name, info, vectorName } = collection(c);
    const b = await body(c);
    if (!Array.isArray(b.searches) || b.searches.length > 100) throw new InvalidInput('Format error in JSON body: searches must be a list of at most 100 searches');
    const out = [];
    for (const [i, s] of b.searches.entries()) out.push(await searchBody(name, info, vectorName, object(s, `searches[${i}]`)));
    return ok(c, out, t);
  });

  /** The Query API: nearest to a vector (or to a stored point's vector), or, without a query, points in id order. */
  const query = async (name: string, info: { metric: Metric; dimensions: number }, vectorName: string | undefined, q: Json) => {
    if (q.prefetch !== undefined && q.prefetch !== null) throw new InvalidInput('Wrong input: prefetch is not supported');
    if (q.lookup_from !== undefined && q.lookup_from !== null) throw new InvalidInput('Wrong input: lookup_from is not supported');
    if (q.using !== undefined && q.using !== null && q.using !== (vectorName ?? '')) throw new InvalidInput(`Wrong input: Not existing vector name error: ${String(q.using)}`);
    const s: Json = { ...q, with_payload: q.with_payload ?? false };
    let target = q.query;
    if (target === undefined || target === null) {
      const limit = intIn(q.limit, 1, 10_000, 10, 'limit');
      const shape = shaper(s.with_payload, s.with_vector ?? false, vectorName);
      const page = vectors.scroll(name, { where: compileQdrantFilter(name, q.filter, vectorName), limit: limit + intIn(q.offset, 0, 100_000, 0, 'offset'), values: shape.values });
      return page.points.slice(intIn(q.offset, 0, 100_000, 0, 'offset')).map((p) => ({ ...shape.point(p), version: 0, score: 0 }));
    }
    let mmr: Json | undefined;
    if (typeof target === 'object' && !Array.isArray(target)) {
      const t = target as Json;
      if (!('nearest' in t)) throw new InvalidInput(`Wrong input: query ${Object.keys(t)[0] ?? '{}'} is not supported (a vector, a point id, or {nearest})`);
      if (t.mmr !== undefined && t.mmr !== null) mmr = object(t.mmr, 'query.mmr');
      target = t.nearest;
    }
    if (typeof target === 'number' || typeof target === 'string') {
      const found = vectors.fetch(name, [storedId(name, target, 'query')], true)[0];
      if (!found) throw new NotFound(`Not found: No point with id ${String(target)} found`);
      target = found.values;
    }
    if (!mmr) return search(name, info.metric, vectorName, s, target);
    // Maximal marginal relevance (LangChain's maxMarginalRelevanceSearch): candidates by
    // similarity, then chosen one by one for relevance minus likeness to those already chosen.
    // Each candidate keeps its highest likeness so far, updated against the newest choice only
    // (O(candidates × limit × dims), not cubic: 800 candidates held the loop 15 s in review),
    // and the loop yields every few milliseconds (slices.ts), so a large re-ranking runs in slices.
    const limit = intIn(q.limit, 1, MMR_MAX, 10, 'limit');
    const candidates = await search(name, info.metric, vectorName, { ...s, limit: intIn(mmr.candidates_limit, 1, MMR_MAX, Math.max(limit, 20), 'mmr.candidates_limit'), offset: 0, with_vector: true }, target);
    const diversity = typeof mmr.diversity === 'number' ? mmr.diversity : 0.5;
    const vecs = candidates.map((p) => unit(vectorOf(p.vector, vectorName, 'vector')));
    const query = unit(checkVector(target as number[], info.dimensions, 'query'));
    const relevance = vecs.map((v) => dot(query, v));
    const likeness = new Float64Array(vecs.length).fill(-Infinity);
    const taken = new Uint8Array(vecs.length);
    const chosen: number[] = [];
    const slices = new Slices();
    while (chosen.length < Math.min(limit, vecs.length)) {
      let best = -1;
      let bestScore = -Infinity;
      for (let i = 0; i < vecs.length; i++) {
        if (taken[i]) continue;
        const score = (1 - diversity) * relevance[i]! - diversity * (chosen.length ? likeness[i]! : 0);
        if (score > bestScore) [best, bestScore] = [i, score];
      }
      chosen.push(best);
      taken[best] = 1;
      for (let i = 0; i < vecs.length; i++) if (!taken[i]) likeness[i] = Math.max(likeness[i]!, dot(vecs[i]!, vecs[best]!));
      await slices.tick();
    }
    const withVector = q.with_vector === true;
    return chosen.map((i) => {
      const p = { ...candidates[i]! };
      if (!withVector) delete p.vector;
      return p;
    });
  };

  route('post', '/collections/:name/points/query', 'shared', async (c, _caller, t) => {
    const { name, info, vectorName } = collection(c);
    return ok(c, { points: await query(name, info, vectorName, await body(c)) }, t);
  });

  route('post', '/collections/:name/points/query/batch', 'shared', async (c, _caller, t) => {
    const { name, info, vectorName } = collection(c);
    const b = await body(c);
    if (!Array.isArray(b.searches) || b.searches.length > 100) throw new InvalidInput('Format error in JSON body: searches must be a list of at most 100 queries');
    const out = [];
    for (const [i, s] of b.searches.entries()) out.push({ points: await query(name, info, vectorName, object(s, `searches[${i}]`)) });
    return ok(c, out, t);
  });

  app.notFound((c) => envelopeError(c, `Not found: no route for ${c.req.method} ${c.req.path}`, 404, performance.now()));
  app.onError((err, c) => {
    node.log.error({ err }, 'qdrant request failed');
    return envelopeError(c, 'Service internal error: see the server log', 500, performance.now());
  });
  return app;
}

const CREATE_KEYS = new Set(['vectors', 'shard_number', 'sharding_method', 'replication_factor', 'write_consistency_factor', 'on_disk_payload', 'hnsw_config', 'wal_config', 'optimizers_config', 'init_from', 'quantization_config', 'sparse_vectors', 'strict_mode_config', 'metadata']);


function ok(c: Context, result: unknown, started: number): Response {
  return c.json({ result, status: 'ok', time: (performance.now() - started) / 1000 });
}

function envelopeError(c: Context, error: string, status: ContentfulStatusCode, started: number): Response {
  return c.json({ status: { error }, time: (performance.now() - started) / 1000 }, status);
}

function object(v: unknown, where: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidInput(`Format error in JSON body: ${where} must be an object`);
  return v as Json;
}

function intIn(v: unknown, min: number, max: number, fallback: number, where: string): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new InvalidInput(`Wrong input: ${where} must be an integer from ${min} to ${max}`);
  return v;
}

/** Which parts of a point an answer carries (with_payload: bool, list of keys, or {include|exclude}). */
function shaper(withPayload: unknown, withVector: unknown, vectorName: string | undefined) {
  let pick: (m: Json | null) => Json | null = (m) => m;
  let payload = true;
  if (withPayload === false) payload = false;
  else if (Array.isArray(withPayload)) pick = (m) => (m ? pickKeys(m, withPayload as string[]) : m);
  else if (typeof withPayload === 'object' && withPayload !== null) {
    const w = withPayload as Json;
    if (Array.isArray(w.include)) pick = (m) => (m ? pickKeys(m, w.include as string[]) : m);
    else if (Array.isArray(w.exclude)) {
      const ex = new Set(w.exclude as string[]);
      pick = (m) => (m ? Object.fromEntries(Object.entries(m).filter(([k]) => !ex.has(k))) : m);
    } else throw new InvalidInput('Format error in JSON body: with_payload must be a bool, a list of keys, {include} or {exclude}');
  } else if (withPayload !== true) throw new InvalidInput('Format error in JSON body: with_payload must be a bool, a list of keys, {include} or {exclude}');
  if (withVector !== true && withVector !== false && !Array.isArray(withVector)) throw new InvalidInput('Format error in JSON body: with_vector must be a bool or a list of vector names');
  const values = withVector === true || (Array.isArray(withVector) && withVector.includes(vectorName ?? ''));
  return {
    payload,
    values,
    point(p: { id: string; metadata: Json | null; values?: number[] }): Json {
      const out: Json = { id: wireId(p.id) };
      if (payload) out.payload = pick(p.metadata) ?? {};
      if (values && p.values) out.vector = vectorName === undefined ? p.values : { [vectorName]: p.values };
      return out;
    },
  };
}

function pickKeys(m: Json, keys: string[]): Json {
  const out: Json = {};
  for (const k of keys) if (Object.hasOwn(m, k)) out[k] = m[k];
  return out;
}

/**
 * Removes a top-level key, or a nested one by dotted path, following only the payload's own
 * keys: `__proto__.hasOwnProperty` once walked into Object.prototype and deleted a built-in
 * from every object in the process (review: every later write failed, then the process died).
 */
function deletePath(m: Json, path: string): void {
  const parts = path.split('.');
  let at: unknown = m;
  for (const p of parts.slice(0, -1)) {
    if (typeof at !== 'object' || at === null || Array.isArray(at) || !Object.hasOwn(at, p)) return;
    at = (at as Json)[p];
  }
  const last = parts[parts.length - 1]!;
  if (typeof at === 'object' && at !== null && !Array.isArray(at) && Object.hasOwn(at, last)) delete (at as Json)[last];
}

/** Strata scores (1 - distance for Cosine and Dot, squared distance for Euclid) in Qdrant's convention. */
function qdrantScore(metric: Metric, score: number): number {
  return metric === 'l2' ? Math.sqrt(Math.max(0, score)) : score;
}

const PAYLOAD_TYPES = new Set(['keyword', 'integer', 'float', 'bool', 'geo', 'datetime', 'text', 'uuid']);
const MAX_PAYLOAD_INDEXES = 64;

/** MMR's candidates and limit: bounded, so one re-ranking is bounded work. */
const MMR_MAX = 1000;

/** A copy scaled to length 1 (zero stays zero): cosine is then a dot product. */
function unit(v: ArrayLike<number>): Float32Array {
  let n = 0;
  for (let i = 0; i < v.length; i++) n += v[i]! * v[i]!;
  const out = Float32Array.from(v);
  if (n > 0) for (let i = 0; i < out.length; i++) out[i]! /= Math.sqrt(n);
  return out;
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** JSON answers omit undefined; so does the stored payload (LangChain sends customPayload: undefined). */
function dropUndefined(o: Json): Json {
  return JSON.parse(JSON.stringify(o)) as Json;
}

/** Which points a call names: `points` (ids) or `filter`, in the body. */
function selector(b: Json, name: string, vectorName: string | undefined, resolve: (name: string, raw: unknown[], where: string) => string[]): { ids?: string[]; where?: Where } {
  const ids = b.points;
  if (Array.isArray(ids)) return { ids: resolve(name, ids, 'points') };
  if (ids !== undefined && ids !== null) throw new InvalidInput('Format error in JSON body: points must be a list of point ids');
  if (b.filter === undefined || b.filter === null) throw new InvalidInput('Format error in JSON body: expected points or filter');
  const where = compileQdrantFilter(name, b.filter, vectorName);
  // An empty filter selects every point, as in Qdrant.
  return { where: where ?? { sql: '1', params: [] } };
}

export type { Match };
