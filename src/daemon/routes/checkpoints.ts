import { z } from 'zod';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import { id } from '../schemas.js';
import type { StrataNode } from '../strata-node.js';
import { withUploadBody } from '../upload-body.js';
import { serveFile } from './models.js';

const FILE_PATH = '/v1/runs/:run/checkpoints/:step/files/:path{.+}';
const fileParams = z.object({ run: id, step: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER), path: z.string().min(1) });

export function checkpointRoutes(router: ApiRouter, node: StrataNode): void {
  const { checkpoints } = node;

  router.route(
    {
      method: 'put',
      path: FILE_PATH,
      summary: 'Upload a checkpoint file, streamed; optional X-Content-Sha256',
      tag: 'checkpoints',
      access: 'service',
      params: fileParams,
      responses: { 201: { description: '{path, size, sha256}' } },
    },
    async (c, { params, caller }) =>
      withUploadBody(c, async (body) => c.json(await checkpoints.putFile(actorOf(caller), params.run, params.step, params.path, body, c.req.header('x-content-sha256')), 201)),
  );

  for (const method of ['get', 'head'] as const) {
    router.route(
      { method, path: FILE_PATH, summary: 'Download a checkpoint file; one Range allowed', tag: 'checkpoints', access: 'read', params: fileParams, responses: { 200: { description: 'the bytes' }, 206: { description: 'a range' } } },
      (c, { params }) => serveFile(c, node, checkpoints.locateFile(params.run, params.step, params.path), method === 'head'),
    );
  }

  router.route(
    { method: 'get', path: '/v1/runs/:run/checkpoints', summary: 'Steps with sizes and tier, newest first', tag: 'checkpoints', access: 'read', params: z.object({ run: id }), responses: { 200: { description: '{items}' } } },
    (c, { params }) => c.json(checkpoints.list(params.run)),
  );

  router.route(
    { method: 'post', path: '/v1/admin/checkpoints/retention', summary: 'Apply the checkpoint retention policy now', tag: 'admin', access: 'admin', responses: { 200: { description: '{archived, deleted}' } } },
    async (c, { caller }) => c.json(await checkpoints.applyRetention(actorOf(caller), node.config.checkpoints)),
  );
}
