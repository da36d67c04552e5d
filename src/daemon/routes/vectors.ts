import { z } from 'zod';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import { reply } from '../reply.js';
import { upsertBody, vectorId, vectorValues as values } from '../../engines/vectors/upsert-batch.js';
import type { StrataNode } from '../strata-node.js';

// Vector collections and the embedding cache. Upsert, query and fetch also speak MessagePack.
// Values arrive as JSON numbers (or MessagePack floats); the engine checks dimensions and
// finiteness, so a bad vector is a 400 and nothing of its batch is written.

const name = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'collection names are 1-63 lower-case letters, digits, _ and -');
const scalar = z.union([z.string().max(1024), z.number(), z.boolean()]);
const condition = z.union([
  scalar,
  z.strictObject({ $in: z.array(scalar).min(1).max(1000).optional(), $gte: z.number().optional(), $lte: z.number().optional(), $gt: z.number().optional(), $lt: z.number().optional() }),
]);
const filter = z.record(z.string().max(64), condition);
const params = z.object({ name });

export function vectorRoutes(router: ApiRouter, node: StrataNode): void {
  const { vectors } = node;
  const d = node.config.vectors;

  router.route(
    {
      method: 'post',
      path: '/v1/collections',
      summary: 'Create a vector collection',
      tag: 'vectors',
      access: 'service',
      body: z.strictObject({
        name,
        dimensions: z.int().min(1).max(d.max_dimensions),
        metric: z.enum(['cos', 'l2', 'ip']),
        dtype: z.enum(['f32', 'f16', 'i8']).default('f32'),
        connectivity: z.int().min(2).max(256).default(d.defaults.connectivity),
        expansion_add: z.int().min(1).max(4096).default(d.defaults.expansion_add),
        expansion_search: z.int().min(1).max(4096).default(d.defaults.expansion_search),
      }),
      responses: { 201: { description: 'created' }, 409: { description: 'exists' } },
    },
    async (c, { body, caller }) => c.json(await vectors.createCollection(actorOf(caller), body), 201),
  );

  router.route(
    { method: 'get', path: '/v1/collections', summary: 'Collections with counts and index memory', tag: 'vectors', access: 'shared', responses: { 200: { description: '{items}' } } },
    (c) => c.json({ items: vectors.list() }),
  );

  router.route(
    { method: 'get', path: '/v1/collections/:name', summary: 'A collection: {name, dimensions, metric, dtype, count, memory_bytes, tombstones}', tag: 'vectors', access: 'shared', params, responses: { 200: { description: 'the collection' } } },
    (c, { params }) => c.json(vectors.info(params.name)),
  );

  router.route(
    { method: 'delete', path: '/v1/collections/:name', summary: 'Delete a collection, its vectors and its index', tag: 'vectors', access: 'service', params, responses: { 204: { description: 'deleted' } } },
    async (c, { params, caller }) => {
      await vectors.deleteCollection(actorOf(caller), params.name);
      return c.body(null, 204);
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/collections/:name/upsert',
      summary: 'Insert or replace vectors (all or none)',
      tag: 'vectors',
      access: 'service',
      params,
      msgpack: true,
      body: upsertBody,
      // Decoded off the event loop when big (see VectorStore.decodeUpsert), checked against the collection's dimensions.
      decode: (raw, { params, limits }) => vectors.decodeUpsert(params.name, raw.bytes, raw.msgpack, limits.jsonDepth),
      responses: { 200: { description: '{upserted: n}' } },
    },
    async (c, { params, body, caller }) => reply(c, { upserted: (await vectors.upsertBatch(actorOf(caller), params.name, body)).upserted }),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/collections/:name/query',
      summary: 'Nearest neighbours, best first, with optional metadata filter',
      tag: 'vectors',
      access: 'shared',
      params,
      msgpack: true,
      body: z.strictObject({
        vector: values,
        top_k: z.int().min(1).max(1000),
        filter: filter.optional(),
        include_metadata: z.boolean().optional(),
        include_values: z.boolean().optional(),
        include_entities: z.boolean().optional(),
      }),
      responses: { 200: { description: '{matches:[{id, score, metadata?, values?, entity?}]}' } },
    },
    async (c, { params, body }) => {
      const { matches, plan } = await vectors.query(params.name, body);
      if (body.include_entities) {
        const entities = node.graph.entitiesForVectors(params.name, matches.map((m) => m.id));
        for (const m of matches) (m as typeof m & { entity?: unknown }).entity = entities.get(m.id) ?? null;
      }
      c.header('X-Strata-Plan', plan);
      return reply(c, { matches });
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/collections/:name/fetch',
      summary: 'Vectors by id (absent ids are left out)',
      tag: 'vectors',
      access: 'shared',
      params,
      msgpack: true,
      body: z.strictObject({ ids: z.array(vectorId).max(d.max_batch), include_values: z.boolean().default(true) }),
      responses: { 200: { description: '{vectors:[{id, values, metadata}]}' } },
    },
    (c, { params, body }) => reply(c, { vectors: vectors.fetch(params.name, body.ids, body.include_values) }),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/collections/:name/delete',
      summary: 'Delete vectors by ids or by filter',
      tag: 'vectors',
      access: 'service',
      params,
      body: z.union([z.strictObject({ ids: z.array(vectorId).max(d.max_batch) }), z.strictObject({ filter: filter.refine((f) => Object.keys(f).length > 0, 'the filter is empty') })]),
      responses: { 200: { description: '{deleted: n}' } },
    },
    async (c, { params, body, caller }) => c.json({ deleted: (await vectors.delete(actorOf(caller), params.name, body)).deleted }),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/embeddings/cache',
      summary: 'Remember embeddings by (model, text)',
      tag: 'embeddings',
      access: 'service',
      msgpack: true,
      body: z.strictObject({
        model: z.string().min(1).max(200),
        items: z
          .array(z.strictObject({ text: z.string().max(1024 * 1024), values: z.array(z.number().refine(Number.isFinite, 'values must be finite')).min(1).max(d.max_dimensions) }))
          .min(1)
          .max(d.max_batch),
      }),
      responses: { 200: { description: '{stored: n}' } },
    },
    async (c, { body }) => c.json({ stored: await node.embeddings.put(body.model, body.items) }),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/embeddings/cache/lookup',
      summary: 'Cached embeddings, aligned with the texts asked for (null when absent)',
      tag: 'embeddings',
      access: 'shared',
      msgpack: true,
      body: z.strictObject({ model: z.string().min(1).max(200), texts: z.array(z.string().max(1024 * 1024)).min(1).max(d.max_batch) }),
      responses: { 200: { description: '{results:[{index, values}|null]}' } },
    },
    async (c, { body }) => {
      const found = await node.embeddings.lookup(body.model, body.texts);
      return reply(c, { results: found.map((values, index) => (values ? { index, values } : null)) });
    },
  );
}
