import { serve } from '@hono/node-server';
import { Hono } from 'hono';

// The floor peer: a bare hono app on the same server adapter as Strata, doing no work beyond
// the framework's own: a public GET, and a GET that checks a bearer token against a constant
// and answers a small JSON object. What Strata adds to these is its per-request cost (auth,
// routing, validation, metrics, logging).

const token = process.argv[2] ?? 'token';
const stats = { capacity_bytes: 500000000000, used_bytes: 0, hits: 0, misses: 0, evictions: 0, entries: 0 };
const app = new Hono();
app.get('/healthz', (c) => c.json({ status: 'ok' }));
app.get('/v1/cache', (c) => {
  if (c.req.header('authorization') !== `Bearer ${token}`) return c.json({ error: { code: 'unauthorized', message: 'no' } }, 401);
  return c.json(stats);
});
const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info) => process.stdout.write(`listening http://127.0.0.1:${info.port}\n`));
process.on('SIGTERM', () => server.close());
