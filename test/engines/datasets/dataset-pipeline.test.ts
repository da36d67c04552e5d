import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { DatasetCatalog, datasetMigrations } from '../../../src/engines/datasets/dataset-catalog.js';
import { DatasetPipeline, DEFAULT_PARAMS, type PipelineParams } from '../../../src/engines/datasets/dataset-pipeline.js';
import { PipelinePool } from '../../../src/engines/datasets/pipeline-pool.js';
import { FsObjectStore } from '../../../src/engines/objects/fs-object-store.js';
import type { ByteRange, PutOptions } from '../../../src/engines/objects/object-store.js';
import { SqlStore } from '../../../src/engines/sql/sql-store.js';
import { tempDir } from '../../helpers/daemon.js';
import { pipelineInput, PLANS } from './pipeline-input.js';

// The pipeline's output must not depend on how it is run: worker count, batch interleaving or
// the duplicate finder's memory budget. pipeline-golden.json holds the shard hashes and stats
// 0.12.0 produced for this input, one row at a time on the event loop; every configuration
// here must produce those bytes. (One error message differs on purpose: 0.12 missed an overlong
// line that arrived inside one read chunk; line 6001 is now reported as too long.)

interface Golden {
  shards: Array<[number, string]>;
  stats: Record<string, unknown> & { errors: Array<{ file: string; line: number; message: string }> };
}
const GOLDEN = JSON.parse(readFileSync(new URL('./pipeline-golden.json', import.meta.url), 'utf8')) as Record<keyof typeof PLANS, Golden>;
const actor = { tokenId: 'tok_test' };
const pools: PipelinePool[] = [];
afterAll(async () => {
  await Promise.all(pools.map((p) => p.close()));
});

async function setup() {
  const root = tempDir('strata-pipeline-');
  const sql = await SqlStore.open(join(root, 'datasets.db'), datasetMigrations);
  const objects = new FsObjectStore(join(root, 'objects'));
  const catalog = new DatasetCatalog(sql.db, sql.changes, sql.writer, objects);
  await catalog.create(actor, 'd');
  const input = pipelineInput(6000);
  await catalog.putRawFile(actor, 'd', 'a.jsonl', (async function* () { yield Buffer.from(input); })());
  await catalog.putRawFile(actor, 'd', 'b.txt', (async function* () { yield Buffer.from(input.split('\n').slice(0, 400).map((l) => l.slice(0, 200)).join('\n')); })());
  return { root, sql, objects, catalog };
}

async function run(env: Awaited<ReturnType<typeof setup>>, job: string, plan: keyof typeof PLANS, workers: number, dedupMemoryBytes?: number) {
  const pool = new PipelinePool(workers);
  pools.push(pool);
  const p = new DatasetPipeline(env.catalog, env.root, 'test', pool, dedupMemoryBytes ? { dedupMemoryBytes } : {});
  const params = { ...DEFAULT_PARAMS, ...PLANS[plan], steps: [...PLANS[plan].steps], shard_rows: 700, max_line_chars: 200_000 } as PipelineParams;
  const r = await p.run(actor, job, 'd', params, { signal: new AbortController().signal, progress() {} });
  const v = env.catalog.version('d', r.version)!;
  const shards: Array<[number, string]> = [];
  for (const s of v.shards) {
    const h = createHash('sha256');
    for await (const c of await env.objects.get(s.path)) h.update(c as Buffer);
    shards.push([s.rows, h.digest('hex').slice(0, 16)]);
  }
  const { dedup_spills: spills, ...stats } = r.stats;
  return { shards, stats, spills };
}

function expected(plan: keyof typeof PLANS): Golden {
  const g = structuredClone(GOLDEN[plan]);
  const e = g.stats.errors.find((x) => x.line === 6001)!;
  e.message = 'the line is 300001 bytes, longer than max_line_chars (200000)';
  return g;
}

describe('dataset pipeline output', () => {
  it('is byte-for-byte 0.12.0\'s for every step plan, on one worker and on three', async () => {
    const env = await setup();
    try {
      let n = 0;
      for (const plan of Object.keys(PLANS) as Array<keyof typeof PLANS>) {
        for (const workers of [1, 3]) {
          const got = await run(env, `job-${n++}`, plan, workers);
          expect({ ...got, spills: undefined }, `${plan}, ${workers} workers`).toEqual(expected(plan));
          expect(got.spills).toBe(0);
        }
      }
    } finally {
      await env.sql.close();
    }
  }, 120_000);

  it('is the same when duplicate detection spills to disk many times', async () => {
    const env = await setup();
    try {
      // 64 KiB: the tables spill every few hundred rows, so most duplicates are found on disk.
      for (const plan of ['all', 'dedup_last'] as const) {
        const got = await run(env, `spill-${plan}`, plan, 2, 64 * 1024);
        expect({ ...got, spills: undefined }, plan).toEqual(expected(plan));
        expect(got.spills).toBeGreaterThan(10);
      }
    } finally {
      await env.sql.close();
    }
  }, 120_000);

  it('a stalled tier stops the reading: memory holds a bounded number of lines, not the file', async () => {
    // Shard writes wait on a gate; reads are counted as the job consumes them.
    let bytesRead = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let shardsStarted = 0;
    class StalledTier extends FsObjectStore {
      override async get(key: string, range?: ByteRange): Promise<Readable> {
        const inner = await super.get(key, range);
        if (!key.includes('/raw/')) return inner;
        return Readable.from((async function* () {
          for await (const c of inner) {
            bytesRead += (c as Buffer).length;
            yield c as Buffer;
          }
        })(), { objectMode: true, highWaterMark: 1 });
      }
      override async put(key: string, body: AsyncIterable<Uint8Array>, options?: PutOptions) {
        if (key.endsWith('.parquet')) {
          shardsStarted++;
          await gate;
        }
        return super.put(key, body, options);
      }
    }
    const root = tempDir('strata-pipeline-');
    const sql = await SqlStore.open(join(root, 'datasets.db'), datasetMigrations);
    const objects = new StalledTier(join(root, 'objects'));
    const catalog = new DatasetCatalog(sql.db, sql.changes, sql.writer, objects);
    try {
      await catalog.create(actor, 'd');
      const input = Buffer.from(pipelineInput(40_000));
      expect(input.length).toBeGreaterThan(24 * 1024 * 1024);
      await catalog.putRawFile(actor, 'd', 'a.jsonl', (async function* () { yield input; })());
      const pool = new PipelinePool(2);
      pools.push(pool);
      const p = new DatasetPipeline(catalog, root, 'test', pool);
      const params = { ...DEFAULT_PARAMS, steps: ['normalize', 'dedup', 'tokenize'], shard_rows: 500 } as PipelineParams;
      const job = p.run(actor, 'stalled', 'd', params, { signal: new AbortController().signal, progress() {} });
      await new Promise((r) => setTimeout(r, 1500));
      // Held: one shard being written, one filling, two batches per worker, and the reader's chunk.
      expect(shardsStarted).toBe(1);
      expect(bytesRead).toBeLessThan(8 * 1024 * 1024);
      release();
      const r = await job;
      expect(bytesRead).toBe(input.length);
      expect(r.stats.rows_out).toBeGreaterThan(30_000);
    } finally {
      await sql.close();
    }
  }, 120_000);
});

describe('dataset pipeline limits', () => {
  it('a shard is cut at 4 M tokens as well as at shard_rows, so long documents do not run a worker out of memory (review)', async () => {
    const root = tempDir('strata-pipeline-');
    const sql = await SqlStore.open(join(root, 'datasets.db'), datasetMigrations);
    const objects = new FsObjectStore(join(root, 'objects'));
    const catalog = new DatasetCatalog(sql.db, sql.changes, sql.writer, objects);
    try {
      await catalog.create(actor, 'long');
      // 24 rows of ~1 M tokens each (single digits: one token apiece).
      const row = (i: number) => JSON.stringify({ text: `${i} ${'7 '.repeat(500_000)}` });
      await catalog.putRawFile(actor, 'long', 'a.jsonl', (async function* () { for (let i = 0; i < 24; i++) yield Buffer.from(row(i) + '\n'); })());
      const pool = new PipelinePool(2);
      pools.push(pool);
      const p = new DatasetPipeline(catalog, root, 'test', pool);
      const r = await p.run(actor, 'long-job', 'long', { ...DEFAULT_PARAMS, steps: ['tokenize'] } as PipelineParams, { signal: new AbortController().signal, progress() {} });
      expect(r.stats.rows_out).toBe(24);
      const v = catalog.version('long', r.version)!;
      // Without the cap: one shard of 24 M tokens.
      expect(v.shards.length).toBeGreaterThanOrEqual(4);
      expect(v.shards.reduce((n, s) => n + s.rows, 0)).toBe(24);
    } finally {
      await sql.close();
    }
  }, 120_000);

  it('a cancel that arrives while the last shards are written wins over the commit (review)', async () => {
    const env = await setup();
    try {
      const abort = new AbortController();
      // The cancel comes as the only shard is handed to a worker: after the last batch was taken.
      class CancelAtShard extends PipelinePool {
        override shard(columns: Parameters<PipelinePool['shard']>[0]) {
          abort.abort('cancelled');
          return super.shard(columns);
        }
      }
      const pool = new CancelAtShard(2);
      pools.push(pool);
      const p = new DatasetPipeline(env.catalog, env.root, 'test', pool);
      const params = { ...DEFAULT_PARAMS, steps: ['tokenize'], shard_rows: 1_000_000 } as PipelineParams;
      await expect(p.run(actor, 'late-cancel', 'd', params, { signal: abort.signal, progress() {} })).rejects.toThrow(/cancelled/);
      expect(env.catalog.versionOfJob('late-cancel')).toBeFalsy();
    } finally {
      await env.sql.close();
    }
  }, 120_000);
});
