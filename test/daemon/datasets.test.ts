import { decode } from 'gpt-tokenizer/encoding/cl100k_base';
import { tableFromIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { afterEach, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

// The pipeline end to end through HTTP; shards are read back with parquet-wasm (the Rust
// parquet crate compiled to wasm), an implementation independent of the writer.

type TestNode = Awaited<ReturnType<typeof openTestNode>>;

async function upload(t: TestNode, dataset: string, file: string, body: string) {
  const res = await t.app.request(`/v1/datasets/${dataset}/raw/${file}`, { method: 'PUT', headers: { authorization: `Bearer ${t.adminToken}` }, body });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function finished(t: TestNode, jobId: string) {
  let job: Record<string, any> = {};
  await expect
    .poll(async () => {
      job = (await t.call('GET', `/v1/jobs/${jobId}`)).body;
      return job.state;
    }, { timeout: 30_000, interval: 50 })
    .toMatch(/^(done|failed|cancelled)$/);
  return job;
}

async function readShard(t: TestNode, path: string) {
  const res = await t.app.request(path, { headers: { authorization: `Bearer ${t.adminToken}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/vnd.apache.parquet');
  const table = tableFromIPC(parquet.readParquet(new Uint8Array(await res.arrayBuffer())).intoIPCStream());
  return { fields: table.schema.fields.map((f) => `${f.name}:${String(f.type)}`), rows: table.toArray().map((r) => r.toJSON() as Record<string, any>) };
}

const PARAGRAPH =
  'storage engines keep a write ahead log so that a crash never loses an acknowledged write and replicas can follow the primary by reading that same log in order, while backups ship the log in segments every second and snapshots now and then, so that a restore can reach any second of the last thirty days without surprises';

const INPUT = [
  JSON.stringify({ id: 'a', text: 'Hello\u00a0\u00a0 Ｗｏｒｌｄ, this row stays!', source: 'web' }),
  JSON.stringify({ text: '  hello world, THIS row stays! ' }), // exact duplicate of line 1 once normalized and case-folded
  JSON.stringify({ text: 'short' }),
  JSON.stringify({ text: PARAGRAPH }),
  JSON.stringify({ text: PARAGRAPH.replace('primary', 'leader') }), // near duplicate of line 4
  JSON.stringify({ text: 'Contact me at jane.doe@example.com or 415-555-0132 please, thanks a lot' }),
  JSON.stringify({ text: '$$$ %%% ^^^ &&& *** ((( ))) !!!' }),
  'this line is not json',
  JSON.stringify({ nottext: 1 }),
  JSON.stringify({ text: 'the last row is a perfectly ordinary sentence.' }),
].join('\n');

describe('datasets: long and hostile lines', () => {
  it('long rows on the pipeline workers give processRow\'s result; hostile lines are malformed lines, not a frozen daemon', async () => {
    const { monitorEventLoopDelay } = await import('node:perf_hooks');
    const { processRow } = await import('../../src/engines/datasets/row-steps.js');
    const { encode } = await import('gpt-tokenizer/encoding/cl100k_base');
    const t = await openTestNode();
    try {
      const long = `${PARAGRAPH} mail ada@example.org `.repeat(70); // ~20 KiB: past the in-place limit
      const lines = [
        JSON.stringify({ id: 'long', text: long }),
        JSON.stringify({ text: `  ${long.toUpperCase()}  ` }), // exact duplicate once normalized and case-folded
        JSON.stringify({ text: long.replace('primary', 'leader') }), // near duplicate
        JSON.stringify({ text: 'y'.repeat(2 * 1024 * 1024) }), // longer than max_line_chars
        JSON.stringify({ text: 'deep fields', extra: JSON.parse('['.repeat(200) + ']'.repeat(200)) }),
        JSON.stringify({ text: '\ufdfa'.repeat(900 * 1024) }), // NFKC: 18 times longer, then too long for the filter
        JSON.stringify({ id: 'short', text: 'an ordinary short row to keep' }),
      ];
      await t.call('POST', '/v1/datasets', { name: 'hostile' });
      expect((await upload(t, 'hostile', 'a.jsonl', lines.join('\n'))).status).toBe(201);
      const delay = monitorEventLoopDelay({ resolution: 10 });
      delay.enable();
      const job = await finished(t, (await t.call('POST', '/v1/datasets/hostile/jobs', { steps: ['normalize', 'dedup', 'filter', 'redact_pii', 'tokenize'] })).body.job_id);
      delay.disable();
      expect(job.state, job.error).toBe('done');
      expect(job.stats).toMatchObject({ rows_in: 5, rows_out: 2, duplicates: 2, near_duplicates: 1, filtered: 1, malformed: 2 });
      expect(job.stats.errors.map((e: { line: number }) => e.line)).toEqual([4, 5]);
      // The review measured 9.6 s of frozen loop on the U+FDFA line alone.
      expect(delay.max / 1e6).toBeLessThan(500);
      const version = (await t.call('GET', '/v1/datasets/hostile/versions/1')).body;
      const { rows } = await readShard(t, `/v1/datasets/hostile/versions/1/shards/${version.shards[0].name}`);
      const expected = processRow(long, { steps: ['normalize', 'dedup', 'filter', 'redact_pii', 'tokenize'], filter: { minChars: 1, maxChars: 1_000_000, maxSymbolRatio: 0.3, maxRepeatedLineRatio: 0.3 }, near: true }, encode);
      const got = rows.find((r) => r.id === 'long')!;
      expect(got.text).toBe(expected.text);
      expect(got.text).toContain('[EMAIL]');
      expect(Array.from(got.tokens as Int32Array)).toEqual(expected.tokens);
    } finally {
      await t.close();
    }
  });
});

describe('datasets', () => {
  it('runs normalize, dedup, filter, redact_pii and tokenize into Parquet shards with lineage', async () => {
    const t = await openTestNode();
    expect((await t.call('POST', '/v1/datasets', { name: 'web', description: 'crawl' })).status).toBe(201);
    const put = await upload(t, 'web', 'part-1.jsonl', INPUT);
    expect(put.status).toBe(201);
    expect(put.body).toMatchObject({ file: 'part-1.jsonl', size: Buffer.byteLength(INPUT) });
    const started = await t.call('POST', '/v1/datasets/web/jobs', { steps: ['normalize', 'dedup', 'filter', 'redact_pii', 'tokenize'], min_chars: 10, shard_rows: 2 });
    expect(started.status).toBe(202);
    const job = await finished(t, started.body.job_id);
    expect(job.state, job.error).toBe('done');
    expect(job.result).toMatchObject({ dataset: 'web', version: 1 });
    expect(job.stats).toMatchObject({ rows_in: 8, rows_out: 4, duplicates: 2, near_duplicates: 1, filtered: 2, filtered_by: { too_short: 1, symbols: 1 }, redacted: 1, malformed: 2 });
    expect(job.stats.errors).toEqual([
      { file: 'part-1.jsonl', line: 8, message: expect.stringContaining('not valid JSON') },
      { file: 'part-1.jsonl', line: 9, message: expect.stringContaining('"text"') },
    ]);

    const version = (await t.call('GET', '/v1/datasets/web/versions/1')).body;
    expect(version.lineage).toMatchObject({ steps: ['normalize', 'dedup', 'filter', 'redact_pii', 'tokenize'], tokenizer: 'cl100k_base', raw_files: [{ file: 'part-1.jsonl', sha256: put.body.sha256 }] });
    expect(version.lineage.strata_version).toMatch(/^\d+\.\d+\.\d+/);
    expect(version.shards.map((s: { name: string; rows: number }) => [s.name, s.rows])).toEqual([['shard-00000.parquet', 2], ['shard-00001.parquet', 2]]);
    expect(version.shards[0].path.split('/').pop()).toBe(version.shards[0].name);

    const rows = [];
    for (const s of version.shards) {
      const shard = await readShard(t, `/v1/datasets/web/versions/1/shards/${s.name}`);
      expect(shard.fields.slice(0, 4)).toEqual(['id:Utf8', 'text:Utf8', 'tokens:List<Int32>', 'n_tokens:Int32']);
      rows.push(...shard.rows);
    }
    expect(rows.map((r) => r.text)).toEqual([
      'Hello World, this row stays!',
      PARAGRAPH,
      'Contact me at [EMAIL] or [PHONE] please, thanks a lot',
      'the last row is a perfectly ordinary sentence.',
    ]);
    expect(rows[0]).toMatchObject({ id: 'a', source_file: 'part-1.jsonl', source_line: 1, fields: JSON.stringify({ source: 'web' }) });
    for (const r of rows) {
      const tokens = Array.from(r.tokens as Int32Array);
      expect(r.n_tokens).toBe(tokens.length);
      expect(decode(tokens)).toBe(r.text);
    }
    const listing = (await t.call('GET', '/v1/datasets/web')).body;
    expect(listing.versions).toEqual([expect.objectContaining({ version: 1, job_id: started.body.job_id, rows: 4 })]);
    await t.close();
  });

  it('honours on_error: fail, naming the line; refuses bad requests with 4xx', async () => {
    const t = await openTestNode();
    await t.call('POST', '/v1/datasets', { name: 'd' });
    await upload(t, 'd', 'a.jsonl', INPUT);
    const job = await finished(t, (await t.call('POST', '/v1/datasets/d/jobs', { steps: ['normalize'], on_error: 'fail' })).body.job_id);
    expect(job.state).toBe('failed');
    expect(job.error).toMatch(/a\.jsonl line 8: not valid JSON/);
    expect((await t.call('GET', '/v1/datasets/d')).body.versions).toEqual([]);
    expect((await t.call('POST', '/v1/datasets/d/jobs', { steps: ['normalize', 'normalize'] })).status).toBe(400);
    expect((await t.call('POST', '/v1/datasets/d/jobs', { steps: ['stem'] })).status).toBe(400);
    expect((await t.call('POST', '/v1/datasets/d/jobs', { steps: ['tokenize'], tokenizer: 'gpt2' })).status).toBe(400);
    expect((await t.call('POST', '/v1/datasets', { name: 'Bad Name' })).status).toBe(400);
    expect((await t.call('POST', '/v1/datasets', { name: 'd' })).status).toBe(409);
    expect((await upload(t, 'd', 'a.jsonl', 'again')).status).toBe(409);
    expect((await upload(t, 'd', 'with%20space.txt', 'x')).status).toBe(400);
    expect((await upload(t, 'nope', 'a.txt', 'x')).status).toBe(404);
    await t.call('POST', '/v1/datasets', { name: 'empty' });
    expect((await t.call('POST', '/v1/datasets/empty/jobs', { steps: ['normalize'] })).status).toBe(400);
    expect((await t.call('GET', '/v1/datasets/d/versions/1/shards/shard-00000.parquet')).status).toBe(404);
    expect((await t.call('GET', '/v1/datasets/d/versions/1/shards/..%2Fx')).status).toBe(400);
    // Cancelling a running job: it ends `cancelled`, commits no version and leaves no shards.
    await t.call('POST', '/v1/datasets', { name: 'long' });
    await upload(t, 'long', 'rows.jsonl', Array.from({ length: 60_000 }, (_, i) => JSON.stringify({ text: `row number ${i} with a few words` })).join('\n'));
    const long = (await t.call('POST', '/v1/datasets/long/jobs', { steps: ['normalize', 'dedup', 'tokenize'], shard_rows: 1000 })).body.job_id;
    await expect.poll(async () => (await t.call('GET', `/v1/jobs/${long}`)).body.progress, { timeout: 30_000, interval: 20 }).toBeGreaterThan(0);
    expect((await t.call('POST', `/v1/jobs/${long}/cancel`)).status).toBe(200);
    expect((await finished(t, long)).state).toBe('cancelled');
    expect((await t.call('GET', '/v1/datasets/long')).body.versions).toEqual([]);
    const left = [];
    for await (const o of t.node.datasets.objects.list(`datasets/long/jobs/${long}/`)) left.push(o.key);
    expect(left).toEqual([]);
    // Bounds no row could pass are refused, not run into an empty version (review).
    const impossible = await t.call('POST', '/v1/datasets/long/jobs', { steps: ['filter'], min_chars: 100, max_chars: 10 });
    expect(impossible.status).toBe(400);
    expect(impossible.body.error.message).toContain('min_chars');
    // Shard names past 99999 (shard_rows: 1 on a large input) are names like any other (review).
    expect((await t.call('GET', '/v1/datasets/long/versions/1/shards/shard-100004.parquet')).body.error.code).not.toBe('invalid_input');
    // Plain text: one row per line.
    await upload(t, 'd', 'notes.txt', 'first line\nsecond line\n');
    await t.call('POST', '/v1/datasets', { name: 'p' });
    await upload(t, 'p', 'notes.txt', 'first line\n\nsecond line\n');
    const plain = await finished(t, (await t.call('POST', '/v1/datasets/p/jobs', { steps: ['normalize', 'tokenize'], tokenizer: 'o200k_base' })).body.job_id);
    expect(plain.stats).toMatchObject({ rows_in: 2, rows_out: 2 });
    await t.close();
  });
});

describe('a pipeline job across a kill -9', () => {
  let d: Daemon | undefined;
  afterEach(async () => {
    await d?.stop().catch(() => undefined);
  });

  it('resumes after a restart and commits one version with no duplicate shards', async () => {
    d = await startDaemon();
    const rows = 300_000;
    const body = Array.from({ length: rows }, (_, i) => JSON.stringify({ text: `row ${i}: ${'lorem ipsum dolor sit amet '.repeat(3)}${i * 7919}` })).join('\n');
    expect((await api(d, 'POST', '/v1/datasets', { name: 'big' })).status).toBe(201);
    const up = await fetch(`${d.url}/v1/datasets/big/raw/all.jsonl`, { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body });
    expect(up.status).toBe(201);
    const jobId = (await api(d, 'POST', '/v1/datasets/big/jobs', { steps: ['normalize', 'dedup', 'tokenize'], dedup_threshold: null, shard_rows: 20_000 })).body.job_id as string;
    await expect.poll(async () => (await api(d!, 'GET', `/v1/jobs/${jobId}`)).body.progress, { timeout: 60_000, interval: 20 }).toBeGreaterThan(0.05);
    expect((await api(d, 'GET', `/v1/jobs/${jobId}`)).body.state).toBe('running');
    await d.kill9();
    d = await startDaemon({ dataDir: d.dataDir });
    await expect.poll(async () => (await api(d!, 'GET', `/v1/jobs/${jobId}`)).body.state, { timeout: 120_000, interval: 200 }).toBe('done');
    const dataset = (await api(d, 'GET', '/v1/datasets/big')).body;
    expect(dataset.versions).toHaveLength(1);
    const version = (await api(d, 'GET', '/v1/datasets/big/versions/1')).body;
    expect(version.rows).toBe(rows);
    expect(version.shards.reduce((s: number, x: { rows: number }) => s + x.rows, 0)).toBe(rows);
    expect(version.shards).toHaveLength(rows / 20_000);
    expect(d.output()).toMatch(/job started/);
  }, 240_000);
});
