import { Readable } from 'node:stream';
import { z } from 'zod';
import { Unavailable } from '../../engines/errors.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import type { StrataNode } from '../strata-node.js';

const text = z.string().min(1).max(1_000_000);
const common = {
  annotator: z.string().min(1).max(256).optional(),
  tags: z.array(z.string().min(1).max(64)).max(32).optional(),
  /** The user the texts came from: sealed with their key and erased with them. */
  user_id: z.string().min(1).max(256).optional(),
};

export function feedbackRoutes(router: ApiRouter, node: StrataNode): void {
  let parquetBuilding = false;
  const { feedback } = node;

  router.route(
    {
      method: 'post',
      path: '/v1/feedback/comparisons',
      summary: 'A preference comparison: a prompt, 2-16 responses and the index of the chosen one',
      tag: 'feedback',
      access: 'service',
      body: z
        .strictObject({ prompt: text, responses: z.array(text).min(2).max(16), chosen: z.int().min(0), ...common })
        .refine((b) => b.chosen < b.responses.length, { message: 'chosen must index one of the responses', path: ['chosen'] }),
      responses: { 201: { description: 'the comparison' } },
    },
    async (c, { body, caller }) => c.json(await feedback.addComparison(actorOf(caller), body), 201),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/feedback/ratings',
      summary: 'A rating of a response, 1..10',
      tag: 'feedback',
      access: 'service',
      body: z.strictObject({ prompt: text, response: text, score: z.int().min(1).max(10), ...common }),
      responses: { 201: { description: 'the rating' } },
    },
    async (c, { body, caller }) => c.json(await feedback.addRating(actorOf(caller), body), 201),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/feedback/export',
      summary: 'Comparisons as {prompt, chosen, rejected} pairs, or ratings; JSONL streamed, or one Parquet file',
      tag: 'feedback',
      access: 'service',
      query: z.strictObject({ kind: z.enum(['comparisons', 'ratings']), format: z.enum(['jsonl', 'parquet']).default('jsonl') }),
      responses: { 200: { description: 'application/x-ndjson or application/vnd.apache.parquet' } },
    },
    async (c, { query }) => {
      if (query.format === 'parquet') {
        // A Parquet export is built whole in memory (up to a million rows): one at a time, so
        // that ten clients asking at once (and never reading) cannot hold ten copies.
        if (parquetBuilding) throw new Unavailable('a Parquet export is being built; retry when it is done, or use format=jsonl, which streams');
        parquetBuilding = true;
        try {
          return new Response(await feedback.parquet(query.kind), { headers: { 'content-type': 'application/vnd.apache.parquet' } });
        } finally {
          parquetBuilding = false;
        }
      }
      const rows: AsyncIterable<unknown> = query.kind === 'comparisons' ? feedback.pairs() : feedback.ratings();
      const lines = Readable.from(
        (async function* () {
          for await (const r of rows) yield Buffer.from(JSON.stringify(r) + '\n');
        })(),
      );
      return c.body(Readable.toWeb(lines) as ReadableStream, 200, { 'Content-Type': 'application/x-ndjson' });
    },
  );
}
