import type { ApiRouter } from '../api-router.js';
import { errorBody } from '../http-error.js';
import type { StrataNode } from '../strata-node.js';
import { z } from 'zod';
import { VERSION } from '../version.js';

// Operations endpoints: no token, cheap, safe to hit every second.

export function opsRoutes(router: ApiRouter, node: StrataNode): void {
  router.route(
    {
      method: 'get',
      path: '/healthz',
      summary: 'Liveness: 200 while the process runs',
      tag: 'operations',
      access: 'public',
      responses: { 200: { description: 'alive', schema: z.object({ status: z.literal('ok') }) } },
    },
    (c) => c.json({ status: 'ok' as const }),
  );

  router.route(
    {
      method: 'get',
      path: '/readyz',
      summary: 'Readiness: 200 when every engine is open and the node accepts traffic',
      tag: 'operations',
      access: 'public',
      responses: { 200: { description: 'ready' }, 503: { description: 'not ready, with the reason' } },
    },
    (c) => {
      if (node.draining) return c.json(errorBody('unavailable', 'the node is shutting down'), 503);
      if (node.replication.role === 'replica') {
        const lag = node.replication.lag();
        if (lag.seconds === undefined) return c.json(errorBody('unavailable', `not yet replicating from ${node.replication.primaryUrl}`), 503);
        if (!lag.within) return c.json(errorBody('unavailable', `replication lag ${lag.seconds.toFixed(1)} s is over the ${lag.bound} s bound`), 503);
      }
      // A lost Redis is not a reason to take the node out of rotation: every read falls back
      // to SQLite. It is reported so that operators (and the metric) see it.
      if (node.cache.state() !== 'ok') {
        return c.json({ status: 'degraded', reasons: [`cache: the ${node.cache.cache.driver} backend is unreachable; reads fall back to SQLite`] });
      }
      return c.json({ status: 'ready' });
    },
  );

  // Load-balancer checks in Patroni's convention: a plain 200 or 503, cheap, no token.
  router.route(
    {
      method: 'get',
      path: '/primary',
      summary: 'For load balancers: 200 only on a primary that may write now (epoch confirmed, lease fresh where one is configured); else 503',
      tag: 'operations',
      access: 'public',
      responses: { 200: { description: 'this node takes writes' }, 503: { description: 'it does not' } },
    },
    (c) => {
      const s = node.replication.state();
      if (node.draining || !s.writable) return c.json({ ...s, status: 'unavailable' }, 503);
      return c.json({ ...s, status: 'ok' });
    },
  );

  router.route(
    {
      method: 'get',
      path: '/replica',
      summary: 'For load balancers: 200 only on a replica within replication.max_lag_seconds; else 503',
      tag: 'operations',
      access: 'public',
      responses: { 200: { description: 'a replica fit to serve reads' }, 503: { description: 'not a replica, or too far behind' } },
    },
    (c) => {
      const s = node.replication.state();
      const lag = node.replication.lag();
      const fit = !node.draining && s.role === 'replica' && lag.within;
      return c.json({ ...s, lag_seconds: lag.seconds ?? null, status: fit ? 'ok' : 'unavailable' }, fit ? 200 : 503);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/replication/primary',
      summary: 'Where writes go: the primary this node is or follows, and its epoch',
      tag: 'replication',
      access: 'read',
      responses: { 200: { description: '{primary_url, epoch, this_node:{node_id, role}}' }, 503: { description: 'this node knows no primary now' } },
    },
    (c) => {
      const s = node.replication.state();
      const self = { node_id: s.node_id, role: s.role };
      if (!s.primary_url) return c.json(errorBody('unavailable', 'this node knows no primary now (a replica without primary_url, or a primary not yet listening)', { this_node: self }), 503);
      return c.json({ primary_url: s.primary_url, epoch: s.epoch, this_node: self });
    },
  );

  router.route(
    {
      method: 'get',
      path: '/replication/state',
      summary: "This node's role and epoch, and the primary it follows: asked by a restarted primary before it accepts writes",
      tag: 'operations',
      access: 'public',
      responses: { 200: { description: '{node_id, role, epoch, primary_url, writable}' } },
    },
    (c) => c.json(node.replication.state()),
  );

  if (node.config.metrics.enabled) {
    router.route(
      {
        method: 'get',
        path: '/metrics',
        summary: 'Prometheus text exposition',
        tag: 'operations',
        access: 'public',
        responses: { 200: { description: 'metrics' } },
      },
      async (c) => c.body(await node.metrics.render(), 200, { 'Content-Type': node.metrics.contentType }),
    );
  }

  const document = () => router.openapi({ title: 'Strata', version: VERSION });
  router.route(
    {
      method: 'get',
      path: '/openapi.json',
      summary: 'This OpenAPI document, generated from the schemas that validate requests',
      tag: 'operations',
      access: 'public',
      responses: { 200: { description: 'OpenAPI 3.1 document' } },
    },
    (c) => c.json(document()),
  );
}
