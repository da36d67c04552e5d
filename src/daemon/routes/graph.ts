import { z } from 'zod';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import type { StrataNode } from '../strata-node.js';

const entityId = z.string().min(1).max(256);
const label = z.string().regex(/^[A-Za-z0-9_:.-]{1,64}$/, 'types are 1-64 letters, digits and _ : . -');
const props = z.record(z.string(), z.unknown()).refine((p) => JSON.stringify(p).length <= 64 * 1024, 'props are limited to 64 KiB of JSON');
const direction = z.enum(['out', 'in', 'both']);

export function graphRoutes(router: ApiRouter, node: StrataNode): void {
  const { graph } = node;
  const maxBatch = node.config.vectors.max_batch;

  router.route(
    {
      method: 'post',
      path: '/v1/graph/entities',
      summary: 'Insert or replace entities; an entity may point at a vector ({collection, id?})',
      tag: 'graph',
      access: 'service',
      body: z.strictObject({
        entities: z
          .array(z.strictObject({ id: entityId, type: label, name: z.string().min(1).max(1000), props: props.optional(), vector: z.strictObject({ collection: z.string().min(1).max(63), id: z.string().min(1).max(512).optional() }).optional() }))
          .min(1)
          .max(maxBatch),
      }),
      responses: { 200: { description: '{upserted: n}' } },
    },
    async (c, { body, caller }) => c.json(await graph.upsertEntities(actorOf(caller), body.entities)),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/graph/relations',
      summary: 'Insert or replace typed, directed relations; 400 if an end is unknown',
      tag: 'graph',
      access: 'service',
      body: z.strictObject({ relations: z.array(z.strictObject({ from: entityId, type: label, to: entityId, props: props.optional() })).min(1).max(maxBatch) }),
      responses: { 200: { description: '{upserted: n}' } },
    },
    async (c, { body, caller }) => c.json(await graph.upsertRelations(actorOf(caller), body.relations)),
  );

  router.route(
    { method: 'get', path: '/v1/graph/entities/:id', summary: 'An entity with its relation counts', tag: 'graph', access: 'shared', params: z.object({ id: entityId }), responses: { 200: { description: 'the entity' } } },
    (c, { params }) => c.json(graph.entity(params.id)),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/graph/entities/:id/neighbors',
      summary: 'Entities within depth 1..3, filtered by relation type and direction',
      tag: 'graph',
      access: 'shared',
      params: z.object({ id: entityId }),
      query: z.object({ depth: z.coerce.number().int().min(1).max(3).default(1), type: label.optional(), direction: direction.default('both') }),
      responses: { 200: { description: '{entities, relations}' } },
    },
    (c, { params, query }) => c.json(graph.neighbors(params.id, query)),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/graph/path',
      summary: 'The shortest path as alternating entities and relations, or 404',
      tag: 'graph',
      access: 'shared',
      query: z.object({ from: entityId, to: entityId, max_depth: z.coerce.number().int().min(1).max(6).default(4), direction: direction.default('out'), type: label.optional() }),
      responses: { 200: { description: '{path:[...]}' }, 404: { description: 'no path within max_depth' } },
    },
    (c, { query }) => c.json({ path: graph.path(query.from, query.to, { maxDepth: query.max_depth, direction: query.direction, type: query.type }) }),
  );
}
