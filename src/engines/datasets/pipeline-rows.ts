import type { TokenizerName } from './tokenizer.js';
import type { RowPlan } from './row-steps.js';

// What crosses between a pipeline job and its worker threads. A batch of lines goes out as
// strings; its rows come back in columns, with the numbers packed into typed arrays that
// are moved, not copied (one Int32Array of every row's tokens, one of fingerprints), so a
// batch costs a handful of clones rather than thousands of small objects.

export interface RowBatch {
  jsonl: boolean;
  plan: RowPlan;
  encoding: TokenizerName;
  /** One per line read; '' for a line the job already knows is malformed (too long). */
  lines: string[];
}

/** Per line: what became of it. */
export const SKIPPED = 0;
export const MALFORMED = 1;
export const ROW = 2;

export interface BatchResult {
  kinds: Uint8Array;
  /** MALFORMED: why; ROW: the id the row gave, if any. */
  messages: Array<string | undefined>;
  ids: Array<string | undefined>;
  texts: string[];
  fields: Array<Record<string, unknown> | null>;
  /** A filter's reason for dropping the row, if one did. */
  dropped: Array<string | undefined>;
  /** Bit 0: redacted; bit 1: redacted when the dedup step ran; bit 2: has a fingerprint. */
  flags: Uint8Array;
  /** Row i's tokens are tokens[ends[i-1] .. ends[i]). */
  tokens: Int32Array;
  ends: Int32Array;
  /** Row i's SHA-1 at i × 20. */
  hashes: Uint8Array;
  /** With near duplicates: row i's MinHash at i × 64 and its LSH keys at i × 8. */
  signatures: Uint32Array;
  bands: Float64Array;
}

export const REDACTED = 1;
export const REDACTED_AT_DEDUP = 2;
export const FINGERPRINTED = 4;

/** One Parquet shard's columns, encoded on a worker. */
export interface ShardColumns {
  ids: string[];
  texts: string[];
  /** Row i's tokens are tokens[ends[i-1] .. ends[i]). */
  tokens: Int32Array;
  ends: Int32Array;
  sourceFiles: string[];
  sourceLines: number[];
  fields: Array<Record<string, unknown> | null>;
  createdBy: string;
}
