import { tableFromIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

async function exportOf(t: Awaited<ReturnType<typeof openTestNode>>, query: string) {
  return t.app.request(`/v1/feedback/export?${query}`, { headers: { authorization: `Bearer ${t.adminToken}` } });
}

describe('feedback', () => {
  it('stores comparisons and ratings and exports them as preference pairs, JSONL and Parquet', async () => {
    const t = await openTestNode();
    const c = await t.call('POST', '/v1/feedback/comparisons', { prompt: 'capital of France?', responses: ['Paris', 'Lyon', 'Nice'], chosen: 0, annotator: 'ann-1', tags: ['geo'] });
    expect(c.status).toBe(201);
    expect(c.body).toMatchObject({ prompt: 'capital of France?', chosen: 0, tags: ['geo'] });
    expect((await t.call('POST', '/v1/feedback/ratings', { prompt: 'say hi', response: 'hi!', score: 9 })).status).toBe(201);
    // Bad input: chosen out of range, one response, score outside 1..10, unknown field.
    for (const [path, body] of [
      ['/v1/feedback/comparisons', { prompt: 'p', responses: ['a', 'b'], chosen: 2 }],
      ['/v1/feedback/comparisons', { prompt: 'p', responses: ['a'], chosen: 0 }],
      ['/v1/feedback/ratings', { prompt: 'p', response: 'r', score: 0 }],
      ['/v1/feedback/ratings', { prompt: 'p', response: 'r', score: 11 }],
      ['/v1/feedback/ratings', { prompt: 'p', response: 'r', score: 5, extra: true }],
    ] as const) {
      const r = await t.call('POST', path, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('invalid_input');
    }

    const jsonl = await exportOf(t, 'kind=comparisons&format=jsonl');
    expect(jsonl.headers.get('content-type')).toBe('application/x-ndjson');
    const pairs = (await jsonl.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(pairs.map((p) => [p.prompt, p.chosen, p.rejected])).toEqual([
      ['capital of France?', 'Paris', 'Lyon'],
      ['capital of France?', 'Paris', 'Nice'],
    ]);
    const ratings = (await (await exportOf(t, 'kind=ratings')).text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ratings).toEqual([expect.objectContaining({ prompt: 'say hi', response: 'hi!', score: 9 })]);

    const pq = await exportOf(t, 'kind=comparisons&format=parquet');
    const table = tableFromIPC(parquet.readParquet(new Uint8Array(await pq.arrayBuffer())).intoIPCStream());
    expect(table.schema.fields.map((f) => f.name)).toEqual(['id', 'prompt', 'chosen', 'rejected', 'annotator', 'tags', 'created_at']);
    expect(table.toArray().map((r) => (r.toJSON() as Record<string, unknown>).rejected)).toEqual(['Lyon', 'Nice']);
    expect((await exportOf(t, 'kind=nope')).status).toBe(400);
    await t.close();
  });

  it("a user's feedback goes with their erasure and comes with their export; a finished job cannot be cancelled", async () => {
    const t = await openTestNode();
    await t.call('POST', '/v1/users', { id: 'u', email: 'u@example.com', tier: 'free' });
    await t.call('POST', '/v1/feedback/ratings', { prompt: 'mine', response: 'r', score: 3, user_id: 'u' });
    await t.call('POST', '/v1/feedback/ratings', { prompt: 'anonymous', response: 'r', score: 4 });
    const zip = await t.app.request('/v1/users/u/export', { headers: { authorization: `Bearer ${t.adminToken}` } });
    const { unzipSync } = await import('fflate');
    const feedback = JSON.parse(Buffer.from(unzipSync(new Uint8Array(await zip.arrayBuffer()))['feedback.json']!).toString()) as { ratings: Array<{ prompt: string }> };
    expect(feedback.ratings.map((r) => r.prompt)).toEqual(['mine']);
    const job = (await t.call('POST', '/v1/users/u/erase')).body.job_id;
    await expect.poll(async () => (await t.call('GET', `/v1/jobs/${job}`)).body.state).toBe('done');
    const left = (await (await exportOf(t, 'kind=ratings')).text()).trim().split('\n').map((l) => (JSON.parse(l) as { prompt: string }).prompt);
    expect(left).toEqual(['anonymous']);
    expect((await t.call('POST', `/v1/jobs/${job}/cancel`)).status).toBe(409);
    await t.close();
  });
});
