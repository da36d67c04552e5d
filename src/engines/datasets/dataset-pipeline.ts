import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { InvalidInput } from '../errors.js';
import type { JobContext } from '../jobs/job-runner.js';
import { getReferenced } from '../objects/object-store.js';
import { INLINE_MAX_CHARS, TextWorker } from '../text-worker.js';
import type { Actor } from '../sql/writer.js';
import type { DatasetCatalog } from './dataset-catalog.js';
import { DuplicateFinder } from './near-dedup.js';
import { readLines } from './line-reader.js';
import { ParquetShardWriter } from './parquet-shards.js';
import { processRow, type RowOutcome, type RowPlan, type Step } from './row-steps.js';
import { DEFAULT_FILTER } from './text-steps.js';
import { loadTokenizer, type TokenizerName } from './tokenizer.js';

// One pipeline job: every raw file of a dataset, streamed line by line through the requested
// steps in the requested order, into Parquet shards, committed as the next version at the end.
// Memory holds one line, one shard and the tokenizer; duplicate detection keeps its state in
// a scratch SQLite file. A job that runs again (after a restart) first deletes whatever an
// earlier attempt wrote under its prefix, so its output is never doubled; one whose version
// was already committed just returns it.

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
   * Longer lines are malformed. Each line is normalized, hashed and filtered on the daemon's
   * event loop (and NFKC can multiply a line's length by 18), so this bounds how long one line
   * holds it; training text rarely comes in lines this long.
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

/** JSON fields nested deeper than this make a line malformed (the Parquet writer recurses). */
const MAX_FIELD_DEPTH = 64;

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
}

export class DatasetPipeline {
  constructor(
    private readonly catalog: DatasetCatalog,
    private readonly scratchDir: string,
    private readonly strataVersion: string,
    private readonly text = new TextWorker('dataset job'),
    /** A raw file the catalog names but the tier lost (data loss: counted and logged). */
    private readonly objectMissing?: (tier: string, key: string) => void,
  ) {}

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
    const dedup = has('dedup') ? await DuplicateFinder.open(scratch, params.dedup_threshold ?? undefined) : undefined;
    const tokenizer = has('tokenize') ? await loadTokenizer(params.tokenizer) : undefined;
    const out = new ParquetShardWriter(objects, prefix, params.shard_rows, `strata ${this.strataVersion}`);
    const filter = { minChars: params.min_chars, maxChars: params.max_chars, maxSymbolRatio: params.max_symbol_ratio, maxRepeatedLineRatio: params.max_repeated_line_ratio };
    const plan: RowPlan = { steps: params.steps, filter, near: (params.dedup_threshold ?? undefined) !== undefined };
    const stats: PipelineStats = { rows_in: 0, rows_out: 0, duplicates: 0, near_duplicates: 0, filtered: 0, filtered_by: {}, redacted: 0, tokens: 0, malformed: 0, errors: [], bytes_in: 0 };
    let sinceYield = 0;
    let lastYield = performance.now();
    try {
      for (const f of files) {
        const jsonl = /\.(jsonl|ndjson|json)$/i.test(f.file);
        const source = await getReferenced(objects, f.key, { what: `raw file ${f.file} of ${dataset}`, tier: 'hot', lost: (key) => this.objectMissing?.('hot', key) });
        for await (const { line, text: raw, bytes, tooLong } of readLines(source, params.max_line_chars ?? DEFAULT_PARAMS.max_line_chars)) {
          stats.bytes_in += bytes;
          // CPU-bound work on the main thread: every 256 lines or 20 ms, whichever comes first.
          if (++sinceYield >= 256 || performance.now() - lastYield > 20) {
            sinceYield = 0;
            lastYield = performance.now();
            ctx.progress(Math.min(0.99, stats.bytes_in / total), { ...stats, errors: stats.errors.slice(0, 20) });
            if (ctx.signal.aborted) throw new Error(`job ${String(ctx.signal.reason)}`);
            // CPU-bound work on the main thread: let requests through between batches.
            await yieldToLoop();
          }
          if (tooLong) {
            this.malformed(stats, params, f.file, line, `the line is ${bytes} bytes, longer than max_line_chars (${params.max_line_chars ?? DEFAULT_PARAMS.max_line_chars})`);
            continue;
          }
          if (raw.trim() === '') continue;
          let text: string;
          let id = `${f.file}:${line}`;
          let fields: Record<string, unknown> | null = null;
          if (jsonl) {
            let row: unknown;
            try {
              row = JSON.parse(raw);
            } catch (err) {
              this.malformed(stats, params, f.file, line, `not valid JSON (${(err as Error).message})`);
              continue;
            }
            if (typeof row !== 'object' || row === null || Array.isArray(row) || typeof (row as { text?: unknown }).text !== 'string') {
              this.malformed(stats, params, f.file, line, 'expected a JSON object with a string "text" field');
              continue;
            }
            const { text: t, id: given, ...rest } = row as { text: string; id?: unknown };
            if (depthOf(rest) > MAX_FIELD_DEPTH) {
              this.malformed(stats, params, f.file, line, `its fields are nested deeper than ${MAX_FIELD_DEPTH} levels`);
              continue;
            }
            text = t;
            if (typeof given === 'string' || typeof given === 'number') id = String(given);
            if (Object.keys(rest).length > 0) fields = rest;
          } else text = raw;
          stats.rows_in++;
          // Long rows are processed on the text worker (see row-steps.ts); their fingerprint
          // comes back to be checked here, in step order, as processRow would have in place.
          let outcome: RowOutcome;
          if (text.length > INLINE_MAX_CHARS) {
            outcome = await this.text.run<RowOutcome>({ op: 'row', text, plan, encoding: params.tokenizer });
            if (outcome.fingerprint) {
              const dup = dedup!.checkFingerprint(outcome.fingerprint);
              if (dup) outcome.dropped = dup === 'near' ? 'near_duplicate' : 'duplicate';
            }
          } else {
            outcome = processRow(text, plan, tokenizer && ((t: string) => tokenizer.encode(t)), (fp) => dedup!.checkFingerprint(fp));
          }
          const dropped = outcome.dropped !== undefined;
          if (outcome.dropped === 'duplicate' || outcome.dropped === 'near_duplicate') {
            stats.duplicates++;
            if (outcome.dropped === 'near_duplicate') stats.near_duplicates++;
          } else if (outcome.dropped) {
            stats.filtered++;
            stats.filtered_by[outcome.dropped] = (stats.filtered_by[outcome.dropped] ?? 0) + 1;
          }
          if (outcome.redacted) stats.redacted++;
          text = outcome.text;
          const tokens = outcome.tokens;
          if (dropped) continue;
          stats.tokens += tokens.length;
          stats.rows_out++;
          await out.add({ id, text, tokens, source_file: f.file, source_line: line, fields });
        }
      }
      await out.flush();
    } catch (err) {
      // Failed or cancelled: no shards are left behind (a shutdown's leftovers go at the resume).
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

/** Nesting depth of a parsed JSON value, without recursion. */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    max = Math.max(max, d + 1);
    if (max > MAX_FIELD_DEPTH) return max;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}
