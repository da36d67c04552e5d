import { Readable } from 'node:stream';
import { z } from 'zod';
import { NotFound } from '../../engines/errors.js';
import { DATASET_NAME } from '../../engines/datasets/dataset-catalog.js';
import { DEFAULT_PARAMS, STEPS } from '../../engines/datasets/dataset-pipeline.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import type { StrataNode } from '../strata-node.js';
import { withUploadBody } from '../upload-body.js';
import { getReferenced } from '../../engines/objects/object-store.js';

const name = z.string().regex(DATASET_NAME, 'dataset names are 1-64 of a-z 0-9 . _ - (starting with a letter or digit)');
const nameParams = z.strictObject({ name });
const versionParams = z.strictObject({ name, version: z.coerce.number().int().min(1) });

export function datasetRoutes(router: ApiRouter, node: StrataNode): void {
  const { datasets } = node;

  router.route(
    {
      method: 'post',
      path: '/v1/datasets',
      summary: 'Create a dataset',
      tag: 'datasets',
      access: 'service',
      body: z.strictObject({ name, description: z.string().max(10_000).optional() }),
      responses: { 201: { description: 'the dataset' } },
    },
    async (c, { body, caller }) => c.json(await datasets.create(actorOf(caller), body.name, body.description), 201),
  );

  router.route(
    { method: 'get', path: '/v1/datasets', summary: 'Datasets by name', tag: 'datasets', access: 'shared', responses: { 200: { description: '{items}' } } },
    async (c) => c.json({ items: datasets.list() }),
  );

  router.route(
    { method: 'get', path: '/v1/datasets/:name', summary: 'A dataset with its raw files and versions', tag: 'datasets', access: 'shared', params: nameParams, responses: { 200: { description: 'the dataset' } } },
    async (c, { params }) => c.json(datasets.get(params.name)),
  );

  router.route(
    {
      method: 'put',
      path: '/v1/datasets/:name/raw/:file{.+}',
      summary: 'Upload a raw file, streamed (JSONL with a "text" field when named .jsonl/.ndjson/.json, else plain text, one row per line); raw files are immutable',
      tag: 'datasets',
      access: 'service',
      params: z.strictObject({ name, file: z.string().min(1).max(1024) }),
      responses: { 201: { description: '{file, size, sha256}' }, 409: { description: 'the file exists' } },
    },
    async (c, { params, caller }) => withUploadBody(c, async (body) => c.json(await datasets.putRawFile(actorOf(caller), params.name, params.file, body), 201)),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/datasets/:name/jobs',
      summary: 'Run the pipeline over the raw files: the steps, in the given order, into Parquet shards of a new version',
      tag: 'datasets',
      access: 'service',
      params: nameParams,
      body: z.strictObject({
        steps: z.array(z.enum(STEPS)).min(1).max(STEPS.length).refine((s) => new Set(s).size === s.length, 'each step at most once'),
        tokenizer: z.enum(['cl100k_base', 'o200k_base']).optional(),
        min_chars: z.int().min(0).optional(),
        max_chars: z.int().min(1).optional(),
        max_symbol_ratio: z.number().min(0).max(1).optional(),
        max_repeated_line_ratio: z.number().min(0).max(1).optional(),
        dedup_threshold: z.number().gt(0).max(1).nullable().optional(),
        shard_rows: z.int().min(1).max(1_000_000).optional(),
        on_error: z.enum(['skip', 'fail']).optional(),
        max_line_chars: z.int().min(1).max(16 * 1024 * 1024).optional(),
      }).refine((b) => (b.min_chars ?? DEFAULT_PARAMS.min_chars) <= (b.max_chars ?? DEFAULT_PARAMS.max_chars), { message: 'min_chars must not exceed max_chars: no row could pass', path: ['min_chars'] }),
      responses: { 202: { description: '{job_id}; GET /v1/jobs/{job_id} shows state, progress and stats' } },
    },
    async (c, { params, body, caller }) => {
      const defined = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
      const job = await node.startPipeline(actorOf(caller), params.name, { ...DEFAULT_PARAMS, ...defined, steps: body.steps });
      return c.json({ job_id: job.id }, 202);
    },
  );

  router.route(
    { method: 'get', path: '/v1/datasets/:name/versions/:version', summary: 'A version: shards, stats and lineage', tag: 'datasets', access: 'shared', params: versionParams, responses: { 200: { description: 'the version' } } },
    async (c, { params }) => c.json(datasets.version(params.name, params.version)),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/datasets/:name/versions/:version/shards/:shard',
      summary: 'One Parquet shard (columns id, text, tokens list<int32>, n_tokens, source_file, source_line, fields)',
      tag: 'datasets',
      access: 'shared',
      params: z.strictObject({ name, version: z.coerce.number().int().min(1), shard: z.string().regex(/^shard-\d{5,9}\.parquet$/, 'shard names look like shard-00000.parquet') }),
      responses: { 200: { description: 'application/vnd.apache.parquet' } },
    },
    async (c, { params }) => {
      const shard = datasets.version(params.name, params.version).shards.find((s) => s.name === params.shard);
      if (!shard) throw new NotFound(`version ${params.version} of ${params.name} has no shard ${params.shard}`);
      const stream = await getReferenced(datasets.objects, shard.path, { what: `shard ${params.shard} of ${params.name}`, tier: 'hot', lost: (key) => node.objectMissing('hot', key) });
      return c.body(Readable.toWeb(stream) as ReadableStream, 200, { 'Content-Type': 'application/vnd.apache.parquet', 'Content-Length': String(shard.bytes) });
    },
  );
}
