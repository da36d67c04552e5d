import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { InvalidInput } from '../errors.js';
import type { JobContext } from '../jobs/job-runner.js';
import { getReferenced } from '../objects/object-store.js';
import type { Actor } from '../sql/writer.js';
import type { DatasetCatalog } from './dataset-catalog.js';
import { DEFAULT_DEDUP_MEMORY_BYTES, DuplicateFinder } from './near-dedup.js';
import { readLines } from './line-reader.js';
import { ParquetShardWriter } from './parquet-shards.js';
import { PipelinePool } from './pipeline-pool.js';
import { FINGERPRINTED, MALFORMED, REDACTED, REDACTED_AT_DEDUP, ROW, type BatchResult, type RowBatch } from './pipeline-rows.js';
import type { RowPlan, Step } from './row-steps.js';
import { DEFAULT_FILTER } from './text-steps.js';
import type { TokenizerName } from './tokenizer.js';

// One pipeline job: every raw file of a dataset, streamed line by line through the requested
// steps in the requested order, into Parquet shards, committed as the next version at the end.
//
// The job's thread reads lines into batches and hands them to the worker pool, which runs
// every step but one; results come back and are taken in input order, so duplicate checks
// (the first occurrence is kept) and shard contents are exactly what one thread taking one
// row at a time produced in 0.12 — the tests compare shard bytes with that. Back-pressure:
// at most two batches per worker are out, and at most one shard is being written while the
// next fills, so a slow tier or slow workers stop the reading, and memory holds a bounded
// number of lines whatever the input's size. Duplicate detection keeps its tables in memory
// up to a byte budget and spills the rest to a scratch SQLite file.
//
// A job that runs again (after a restart) first deletes whatever an earlier attempt wrote
// under its prefix, so its output is never doubled; one whose version was already committed
// just returns it.

export { STEPS, type Step } from './row-steps.js';

export interface PipelineParams {
  steps: Step[];
  tokenizer: TokenizerName;
  min_chars: number;
  max_chars: number;
  max_symbol_ratio: number;
  max_repeated_line_ratio: number;
  /** Estimated Jaccard similarity at which a row is a near duplicate; null: exact duplicates only. */
  dedup_threshold: number | null;
  shard_rows: number;
  /** A malformed line: skip it (counted, the first 100 reported) or fail the job. */
  on_error: 'skip' | 'fail';
  /**
   * Longer lines are malformed. Each line is normalized, hashed and filtered in one piece on
   * a worker (and NFKC can multiply a line's length by 18), so this bounds what one line
   * costs; training text rarely comes in lines this long.
   */
  max_line_chars: number;
}

export const DEFAULT_PARAMS: Omit<PipelineParams, 'steps'> = {
  tokenizer: 'cl100k_base',
  min_chars: DEFAULT_FILTER.minChars,
  max_chars: DEFAULT_FILTER.maxChars,
  max_symbol_ratio: DEFAULT_FILTER.maxSymbolRatio,
  max_repeated_line_ratio: DEFAULT_FILTER.maxRepeatedLineRatio,
  dedup_threshold: 0.8,
  shard_rows: 10_000,
  on_error: 'skip',
  max_line_chars: 1024 * 1024,
};

/** Lines, or characters, per batch sent to a worker: large enough that a round trip is noise. */
const BATCH_LINES = 512;
const BATCH_CHARS = 1024 * 1024;

interface LineMeta {
  line: number;
  bytes: number;
  tooLong?: true;
}

interface Batch {
  file: string;
  meta: LineMeta[];
  result: Promise<BatchResult>;
}

export interface PipelineStats {
  rows_in: number;
  rows_out: number;
  duplicates: number;
  near_duplicates: number;
  filtered: number;
  filtered_by: Record<string, number>;
  redacted: number;
  tokens: number;
  malformed: number;
  errors: Array<{ file: string; line: number; message: string }>;
  bytes_in: number;
  /** Times duplicate detection moved its tables from memory to its scratch file (datasets.dedup_memory_mb). */
  dedup_spills: number;
}

export class DatasetPipeline {
  constructor(
    private readonly catalog: DatasetCatalog,
    private readonly scratchDir: string,
    private readonly strataVersion: string,
    private readonly pool = new PipelinePool(),
    private readonly options: {
      /** Bytes of duplicate-detection tables a job keeps in memory before spilling to disk. */
      dedupMemoryBytes?: number;
      /** A raw file the catalog names but the tier lost (data loss: counted and logged). */
      objectMissing?: (tier: string, key: string) => void;
    } = {},
  ) {}

  private objectMissing(tier: string, key: string): void {
    this.options.objectMissing?.(tier, key);
  }

  async run(actor: Actor, jobId: string, dataset: string, params: PipelineParams, ctx: JobContext): Promise<{ dataset: string; version: number; stats: PipelineStats }> {
    const committed = this.catalog.versionOfJob(jobId);
    if (committed) return { ...committed, stats: this.catalog.version(dataset, committed.version).stats as unknown as PipelineStats };
    const objects = this.catalog.objects;
    const prefix = `datasets/${dataset}/jobs/${jobId}`;
    for await (const o of objects.list(`${prefix}/`)) await objects.delete(o.key);
    const files = this.catalog.files(dataset);
    if (files.length === 0) throw new InvalidInput(`dataset ${dataset} has no raw files`);
    const total = files.reduce((s, f) => s + f.size, 0) || 1;
    const scratch = join(this.scratchDir, `dedup-${jobId}.db`);
    await rm(scratch, { force: true });
    const has = (s: Step) => params.steps.includes(s);
    const dedup = has('dedup') ? new DuplicateFinder(scratch, params.dedup_threshold ?? undefined, this.options.dedupMemoryBytes ?? DEFAULT_DEDUP_MEMORY_BYTES) : undefined;
    const pool = this.pool;
    const out = new ParquetShardWriter(objects, prefix, params.shard_rows, `strata ${this.strataVersion}`, (c) => pool.shard(c));
    const filter = { minChars: params.min_chars, maxChars: params.max_chars, maxSymbolRatio: params.max_symbol_ratio, maxRepeatedLineRatio: params.max_repeated_line_ratio };
    const plan: RowPlan = { steps: params.steps, filter, near: (params.dedup_threshold ?? undefined) !== undefined };
    const stats: PipelineStats = { rows_in: 0, rows_out: 0, duplicates: 0, near_duplicates: 0, filtered: 0, filtered_by: {}, redacted: 0, tokens: 0, malformed: 0, errors: [], bytes_in: 0, dedup_spills: 0 };
    const maxLineChars = params.max_line_chars ?? DEFAULT_PARAMS.max_line_chars;
    const inFlight: Batch[] = [];
    let lastYield = performance.now();
    // The job's thread does little per row, but a batch of rows whose duplicate check went to
    // disk, or that carry large fields, is more than a request should wait for.
    const breathe = async () => {
      if (performance.now() - lastYield <= 20) return;
      await yieldToLoop();
      lastYield = performance.now();
    };
    const cancelled = () => {
      if (ctx.signal.aborted) throw new Error(`job ${String(ctx.signal.reason)}`);
    };

    /** One batch's rows, in order: checked for duplicates, counted, and added to the shards. */
    const take = async ({ file, meta, result }: Batch) => {
      const r = await result;
      for (let i = 0; i < meta.length; i++) {
        const { line, tooLong, bytes } = meta[i]!;
        if (tooLong) {
          this.malformed(stats, params, file, line, `the line is ${bytes} bytes, longer than max_line_chars (${maxLineChars})`);
          continue;
        }
        const kind = r.kinds[i]!;
        if (kind === MALFORMED) this.malformed(stats, params, file, line, r.messages[i]!);
        if (kind !== ROW) continue;
        stats.rows_in++;
        const flags = r.flags[i]!;
        let dropped = r.dropped[i];
        let redacted = (flags & REDACTED) !== 0;
        if (flags & FINGERPRINTED) {
          const dup = await dedup!.checkFingerprint({
            hash: r.hashes.subarray(i * 20, i * 20 + 20),
            ...(plan.near ? { signature: r.signatures.subarray(i * 64, i * 64 + 64), bands: r.bands.subarray(i * 8, i * 8 + 8) } : {}),
          });
          stats.dedup_spills = dedup!.spills;
          if (dup) {
            dropped = dup === 'near' ? 'near_duplicate' : 'duplicate';
            redacted = (flags & REDACTED_AT_DEDUP) !== 0;
          }
        }
        if (dropped === 'duplicate' || dropped === 'near_duplicate') {
          stats.duplicates++;
          if (dropped === 'near_duplicate') stats.near_duplicates++;
        } else if (dropped) {
          stats.filtered++;
          stats.filtered_by[dropped] = (stats.filtered_by[dropped] ?? 0) + 1;
        }
        if (redacted) stats.redacted++;
        if (dropped) continue;
        const tokens = r.tokens.subarray(i === 0 ? 0 : r.ends[i - 1]!, r.ends[i]!);
        stats.tokens += tokens.length;
        stats.rows_out++;
        await out.add({ id: r.ids[i] ?? `${file}:${line}`, text: r.texts[i]!, tokens, source_file: file, source_line: line, fields: r.fields[i]!, input_bytes: bytes });
        if ((i & 31) === 31) await breathe();
      }
      ctx.progress(Math.min(0.99, stats.bytes_in / total), { ...stats, errors: stats.errors.slice(0, 20) });
      cancelled();
      await breathe();
    };
    try {
      for (const f of files) {
        const jsonl = /\.(jsonl|ndjson|json)$/i.test(f.file);
        const source = await getReferenced(objects, f.key, { what: `raw file ${f.file} of ${dataset}`, tier: 'hot', lost: (key) => this.objectMissing('hot', key) });
        let lines: string[] = [];
        let meta: LineMeta[] = [];
        let chars = 0;
        const send = async () => {
          const batch: RowBatch = { jsonl, plan, encoding: params.tokenizer, lines };
          inFlight.push({ file: f.file, meta, result: pool.rows(batch) });
          // A failed batch is taken (and throws) in order; until then it must not count as unhandled.
          inFlight[inFlight.length - 1]!.result.catch(() => undefined);
          lines = [];
          meta = [];
          chars = 0;
          while (inFlight.length >= 2 * pool.size) await take(inFlight.shift()!);
        };
        for await (const { line, text, bytes, tooLong } of readLines(source, maxLineChars)) {
          stats.bytes_in += bytes;
          lines.push(tooLong ? '' : text);
          meta.push({ line, bytes, ...(tooLong ? { tooLong } : {}) });
          chars += text.length;
          if (lines.length >= BATCH_LINES || chars >= BATCH_CHARS) await send();
        }
        if (lines.length > 0) await send();
      }
      while (inFlight.length > 0) await take(inFlight.shift()!);
      await out.flush();
      // A cancel that came while the last shards were written still wins over the commit.
      cancelled();
    } catch (err) {
      // Failed or cancelled: no shards are left behind (a shutdown's leftovers go at the resume).
      await Promise.allSettled(inFlight.map((b) => b.result));
      await out.abandon();
      for await (const o of objects.list(`${prefix}/`)) await objects.delete(o.key).catch(() => undefined);
      throw err;
    } finally {
      try {
        dedup?.close();
      } finally {
        for (const f of [scratch, `${scratch}-wal`, `${scratch}-shm`, `${scratch}-journal`]) await rm(f, { force: true });
      }
    }
    ctx.progress(0.995, { ...stats });
    const lineage = {
      raw_files: files.map(({ file, sha256, size }) => ({ file, sha256, size })),
      steps: params.steps,
      params: { ...params, steps: undefined },
      tokenizer: has('tokenize') ? params.tokenizer : null,
      strata_version: this.strataVersion,
      job_id: jobId,
    };
    const version = await this.catalog.addVersion(actor, dataset, { job_id: jobId, rows: stats.rows_out, shards: out.shards, stats: stats as unknown as Record<string, unknown>, lineage });
    return { dataset, version, stats };
  }

  private malformed(stats: PipelineStats, params: PipelineParams, file: string, line: number, message: string): void {
    if (params.on_error === 'fail') throw new InvalidInput(`${file} line ${line}: ${message}`);
    stats.malformed++;
    if (stats.errors.length < 100) stats.errors.push({ file, line, message });
  }
}
