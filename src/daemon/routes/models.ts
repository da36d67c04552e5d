import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { InvalidInput } from '../../engines/errors.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import { parseRange } from '../byte-range.js';
import { errorBody } from '../http-error.js';
import { NativeResponse } from '../native-response.js';
import { withUploadBody } from '../upload-body.js';
import { decodeCursor, page, pageQuery } from '../pagination.js';
import { id } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';

// Cursor shapes, built once (a schema built per request was a tenth of a hot read's CPU).
const AFTER_NAME = z.object({ after: z.string() });

const modelParams = z.object({ model: id });
const versionParams = z.object({ model: id, version: id });
const fileParams = z.object({ model: id, version: id, path: z.string().min(1) });
const FILE_PATH = '/v1/models/:model/versions/:version/files/:path{.+}';

export function modelRoutes(router: ApiRouter, node: StrataNode): void {
  const { models } = node;

  router.route(
    {
      method: 'put',
      path: '/v1/models/:model',
      summary: 'Create or update a model',
      tag: 'models',
      access: 'service',
      params: modelParams,
      body: z.strictObject({ description: z.string().max(10_000).optional(), tags: z.array(z.string().max(200)).max(100).optional() }),
      responses: { 201: { description: 'created' }, 200: { description: 'updated' } },
    },
    async (c, { params, body, caller }) => {
      const { created } = await models.putModel(actorOf(caller), params.model, body);
      return c.json(models.getModel(params.model), created ? 201 : 200);
    },
  );

  router.route(
    { method: 'get', path: '/v1/models', summary: 'Models by name', tag: 'models', access: 'read', query: pageQuery, responses: { 200: { description: 'a page of models' } } },
    (c, { query }) => {
      const from = decodeCursor(query.cursor, AFTER_NAME);
      return c.json(page(models.listModels(query.limit + 1, from?.after), query.limit, (m) => ({ after: m.name })));
    },
  );

  router.route(
    { method: 'get', path: '/v1/models/:model', summary: 'A model with its versions, aliases, alias history and rollout', tag: 'models', access: 'read', params: modelParams, responses: { 200: { description: 'the model' } } },
    (c, { params }) => c.json(models.getModel(params.model)),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/models/:model/versions',
      summary: 'Open a new version',
      tag: 'models',
      access: 'service',
      params: modelParams,
      body: z.strictObject({ version: id.optional(), metadata: z.record(z.string(), z.unknown()).refine((m) => JSON.stringify(m).length <= 64 * 1024, 'metadata is limited to 64 KiB of JSON').optional() }),
      responses: { 201: { description: 'the open version' }, 409: { description: 'exists' } },
    },
    async (c, { params, body, caller }) => c.json(await models.createVersion(actorOf(caller), params.model, body), 201),
  );

  router.route(
    { method: 'get', path: '/v1/models/:model/versions/:version', summary: 'A version (id or alias) with its files', tag: 'models', access: 'read', params: versionParams, responses: { 200: { description: 'the version' } } },
    (c, { params }) => c.json(models.getVersion(params.model, params.version)),
  );

  router.route(
    { method: 'post', path: '/v1/models/:model/versions/:version/finalize', summary: 'Make a version immutable', tag: 'models', access: 'service', params: versionParams, responses: { 200: { description: 'final' } } },
    async (c, { params, caller }) => c.json(await models.finalize(actorOf(caller), params.model, params.version)),
  );

  router.route(
    {
      method: 'put',
      path: FILE_PATH,
      summary:
        'Upload a file, streamed; optional X-Content-Sha256 is checked and nothing is kept on mismatch. With ?upload_id&part=N: one part of a resumable upload',
      tag: 'models',
      access: 'service',
      params: fileParams,
      query: z.object({ upload_id: z.uuid().optional(), part: z.coerce.number().int().min(1).max(10_000).optional() }),
      responses: { 201: { description: '{path, size, sha256}' }, 200: { description: 'a part was stored' }, 400: { description: 'bad path or sha256 mismatch' }, 409: { description: 'version is final' } },
    },
    async (c, { params, query, caller }) =>
      withUploadBody(c, async (source) => {
        if (query.upload_id !== undefined || query.part !== undefined) {
          if (query.upload_id === undefined || query.part === undefined) throw new InvalidInput('a part upload needs both upload_id and part');
          // A declared length lets the part go straight into its place in the assembly file.
          const length = c.req.header('content-length');
          return c.json(await models.uploads.putPart(actorOf(caller), { kind: 'model', owner: params.model, path: params.path }, query.upload_id, query.part, source, length !== undefined && /^\d+$/.test(length) ? { length: Number(length) } : {}));
        }
        const entry = await models.putFile(actorOf(caller), params.model, params.version, params.path, source, c.req.header('x-content-sha256'));
        return c.json(entry, 201);
      }),
  );

  router.route(
    {
      method: 'post',
      path: FILE_PATH,
      summary: 'Resumable upload: ?uploads starts a session, ?upload_id=… completes it (X-Content-Sha256 optional)',
      tag: 'models',
      access: 'service',
      params: fileParams,
      query: z.object({ uploads: z.string().optional(), upload_id: z.uuid().optional() }),
      responses: { 201: { description: '{upload_id} or the completed file' } },
    },
    async (c, { params, query, caller }) => {
      if (query.upload_id !== undefined) {
        return c.json(await models.uploads.complete(actorOf(caller), { kind: 'model', owner: params.model, path: params.path }, query.upload_id, c.req.header('x-content-sha256')), 201);
      }
      if (query.uploads !== undefined) return c.json(await models.uploads.start(actorOf(caller), params.model, params.version, params.path), 201);
      throw new InvalidInput('POST on a file needs ?uploads (start a resumable upload) or ?upload_id=… (complete it)');
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/models/:model/uploads/:upload_id/:path{.+}',
      summary: 'Parts received so far for a resumable upload',
      tag: 'models',
      access: 'service',
      params: z.object({ model: id, upload_id: z.uuid(), path: z.string().min(1) }),
      responses: { 200: { description: '{upload_id, parts:[{part,size,sha256}]}' } },
    },
    async (c, { params }) => {
      const { upload_id, parts } = await models.uploads.listParts({ kind: 'model', owner: params.model, path: params.path }, params.upload_id);
      return c.json({ upload_id, parts: parts.map(({ part, size, sha256 }) => ({ part, size, sha256 })) });
    },
  );

  const download = (c: RouteContext, params: z.infer<typeof fileParams>, head: boolean) =>
    serveFile(c, node, models.locateFile(params.model, params.version, params.path), head);

  router.route(
    { method: 'get', path: FILE_PATH, summary: 'Download a file; one Range allowed', tag: 'models', access: 'read', params: fileParams, responses: { 200: { description: 'the bytes' }, 206: { description: 'a range' }, 416: { description: 'unsatisfiable range' } } },
    (c, { params }) => download(c, params, false),
  );
  router.route(
    { method: 'head', path: FILE_PATH, summary: 'Size, ETag and range support of a file', tag: 'models', access: 'read', params: fileParams, responses: { 200: { description: 'headers only' } } },
    (c, { params }) => download(c, params, true),
  );

  router.route(
    {
      method: 'put',
      path: '/v1/models/:model/aliases/:alias',
      summary: 'Point an alias at a version; the move is kept in the alias history',
      tag: 'models',
      access: 'service',
      params: z.object({ model: id, alias: id }),
      body: z.strictObject({ version: id }),
      responses: { 200: { description: 'moved' } },
    },
    async (c, { params, body, caller }) => {
      const moved = await models.setAlias(actorOf(caller), params.model, params.alias, body.version);
      // A pinned alias should be a cache hit from its first read.
      if (models.isPinnedAlias(params.alias)) backgroundPrefetch(node, params.model, body.version);
      return c.json(moved);
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/models/:model/versions/:version/prefetch',
      summary: "Copy a version's files into the local model cache",
      tag: 'models',
      access: 'service',
      params: versionParams,
      responses: { 202: { description: 'prefetch started' } },
    },
    (c, { params }) => {
      const v = models.resolveVersion(params.model, params.version);
      backgroundPrefetch(node, params.model, v.version);
      return c.json({ model: params.model, version: v.version, state: 'prefetching' }, 202);
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/models/:model/versions/:version/archive',
      summary: "Move a version's files to the archive tier (it is finalized); reads still work, slower",
      tag: 'models',
      access: 'service',
      params: versionParams,
      responses: { 200: { description: '{version, moved, bytes}' } },
    },
    async (c, { params, caller }) => c.json(await models.archive.archiveVersion(actorOf(caller), params.model, params.version)),
  );

  router.route(
    { method: 'get', path: '/v1/cache', summary: 'Model cache capacity, use, hits, misses, evictions', tag: 'models', access: 'read', responses: { 200: { description: 'cache stats' } } },
    (c) => c.json(node.modelCache.stats()),
  );

  router.route(
    {
      method: 'put',
      path: '/v1/models/:model/rollout',
      summary: 'Weighted variants (weights sum to 100)',
      tag: 'models',
      access: 'service',
      params: modelParams,
      body: z.strictObject({ variants: z.array(z.strictObject({ version: id, weight: z.int().min(0).max(100) })).min(1).max(20) }),
      responses: { 200: { description: 'set' } },
    },
    async (c, { params, body, caller }) => c.json(await models.rollouts.set(actorOf(caller), params.model, body.variants)),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/models/:model/rollout/resolve',
      summary: 'The version for a key; sticky while the rollout is unchanged',
      tag: 'models',
      access: 'read',
      params: modelParams,
      query: z.object({ key: z.string().min(1).max(512) }),
      responses: { 200: { description: '{version}' } },
    },
    (c, { params, query }) => c.json(models.rollouts.resolve(params.model, query.key)),
  );
}

function backgroundPrefetch(node: StrataNode, model: string, version: string): void {
  const started = Date.now();
  node.models.prefetch(model, version).then(
    (r) => node.log.info({ model, version, ...r, ms: Date.now() - started }, 'prefetch done'),
    (err: unknown) => node.log.error({ err, model, version }, 'prefetch failed'),
  );
}

type RouteContext = Parameters<Parameters<ApiRouter['route']>[1]>[0];



/** GET/HEAD of a stored file (model or checkpoint): one Range, ETag, length, straight to the socket. */
export async function serveFile(c: RouteContext, node: StrataNode, f: { key: string; sha256: string; size: number; tier: string }, head: boolean, extra: Record<string, string> = {}): Promise<Response> {
  const headers: Record<string, string> = {
    ...extra,
    ETag: `"${f.sha256}"`,
    'Accept-Ranges': 'bytes',
    'Content-Type': 'application/octet-stream',
  };
  // hono answers a HEAD by dispatching it as a GET (and dropping the body), so the HEAD route
  // above is never the one that runs: the method of the request itself says what was asked.
  // Opening the file for a HEAD read it whole under Node and leaked a FileHandle under Bun,
  // which Bun then closed in GC by ending the process (review).
  head ||= c.req.method === 'HEAD';
  // If-Range (RFC 9110 §13.1.5): the range holds only for the representation the client names,
  // compared strongly with the ETag; anything else (another tag, a weak one, a date — files
  // carry no Last-Modified) gets the whole file, so a resumed download is never stitched from
  // two different files (review).
  const ifRange = c.req.header('if-range');
  const range = parseRange(ifRange === undefined || ifRange.trim() === headers.ETag ? c.req.header('range') : undefined, f.size);
  if (range === 'unsatisfiable') {
    return c.json(errorBody('range_not_satisfiable', `the range is outside the file (${f.size} bytes)`), 416, { 'Content-Range': `bytes */${f.size}` });
  }
  const status = range ? 206 : 200;
  if (range) headers['Content-Range'] = `bytes ${range.start}-${range.end}/${f.size}`;
  headers['Content-Length'] = String(range ? range.end - range.start + 1 : f.size);
  if (head) {
    await node.models.checkFile(f);
    return c.body(null, status, headers);
  }
  // Opened before any header is written: a missing blob is a JSON 500, not an empty reply.
  const stream = await node.models.openFile(f, range);
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (!outgoing) return c.body(Readable.toWeb(stream) as ReadableStream, status, headers);
  // Under @hono/node-server, pipe the file straight into the socket: going through a web
  // ReadableStream cost a quarter of the throughput of a cache hit. The response returned
  // below only tells the adapter (and the request log) that it was sent, and with what status.
  outgoing.writeHead(status, { ...headers, 'X-Request-Id': c.get('requestId') });
  pipeline(stream, outgoing).catch(() => stream.destroy());
  return new NativeResponse(null, { status, headers: { 'x-hono-already-sent': 'true' } });
}

