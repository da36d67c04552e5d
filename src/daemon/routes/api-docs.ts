import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { ApiRouter } from '../api-router.js';

// GET /docs: the OpenAPI document rendered by Swagger UI, whose files ship in the
// swagger-ui-dist package and are served from here (no CDN: a node without Internet access
// still shows its API). Read once, at the first request, and kept.

const FILES: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
};

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Strata API</title><link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="api"></div><script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/init.js"></script></body>
</html>
`;

// A file of its own rather than an inline script, so a Content-Security-Policy without
// 'unsafe-inline' (a proxy's) still lets the page run.
const INIT = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#api', deepLinking: true, persistAuthorization: false });\n`;

export function apiDocsRoutes(router: ApiRouter): void {
  const dist = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const cache = new Map<string, Buffer>();
  const file = (name: string) => {
    let bytes = cache.get(name);
    if (!bytes) cache.set(name, (bytes = readFileSync(join(dist, name))));
    return bytes;
  };
  router.route(
    { method: 'get', path: '/docs', summary: 'The HTTP API, rendered from /openapi.json (Swagger UI)', tag: 'operations', access: 'public', responses: { 200: { description: 'an HTML page' } } },
    (c) => c.html(PAGE),
  );
  router.route(
    {
      method: 'get',
      path: '/docs/:file',
      summary: 'The files the API page loads',
      tag: 'operations',
      access: 'public',
      params: z.object({ file: z.enum(['init.js', 'swagger-ui.css', 'swagger-ui-bundle.js']) }),
      responses: { 200: { description: 'the file' } },
    },
    (c, { params }) => {
      if (params.file === 'init.js') return c.body(INIT, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-cache' });
      return c.body(new Uint8Array(file(params.file)), 200, { 'Content-Type': FILES[params.file]!, 'Cache-Control': 'public, max-age=86400' });
    },
  );
}
