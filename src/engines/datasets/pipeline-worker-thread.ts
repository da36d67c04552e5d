import { parentPort } from 'node:worker_threads';
import { encodeShard } from './parquet-shards.js';
import { processRow } from './row-steps.js';
import { loadTokenizer } from './tokenizer.js';
import { FINGERPRINTED, MALFORMED, REDACTED, REDACTED_AT_DEDUP, ROW, SKIPPED, type BatchResult, type RowBatch, type ShardColumns } from './pipeline-rows.js';

// One of the pipeline's worker threads: parses and processes batches of lines (every step but
// the duplicate check, which needs the job's tables) and encodes Parquet shards. Answers in
// arrival order. Pure functions of their input, so a row's output does not depend on which
// worker ran it.

/** JSON fields nested deeper than this make a line malformed (the Parquet writer recurses). */
export const MAX_FIELD_DEPTH = 64;

export type PipelineJob = { op: 'rows'; batch: RowBatch } | { op: 'shard'; columns: ShardColumns };

async function rows({ jsonl, plan, encoding, lines }: RowBatch): Promise<{ result: BatchResult; transfer: ArrayBuffer[] }> {
  const n = lines.length;
  const tokenizer = plan.steps.includes('tokenize') ? await loadTokenizer(encoding) : undefined;
  const encode = tokenizer && ((t: string) => tokenizer.encode(t));
  const near = plan.near && plan.steps.includes('dedup');
  const r: BatchResult = {
    kinds: new Uint8Array(n),
    messages: new Array(n),
    ids: new Array(n),
    texts: new Array(n).fill(''),
    fields: new Array(n).fill(null),
    dropped: new Array(n),
    flags: new Uint8Array(n),
    tokens: new Int32Array(0),
    ends: new Int32Array(n),
    hashes: new Uint8Array(plan.steps.includes('dedup') ? n * 20 : 0),
    signatures: new Uint32Array(near ? n * 64 : 0),
    bands: new Float64Array(near ? n * 8 : 0),
  };
  const tokens: number[][] = [];
  let total = 0;
  for (let i = 0; i < n; i++) {
    const raw = lines[i]!;
    r.ends[i] = total;
    if (raw.trim() === '') {
      r.kinds[i] = SKIPPED;
      continue;
    }
    let text: string;
    if (jsonl) {
      let row: unknown;
      try {
        row = JSON.parse(raw);
      } catch (err) {
        r.kinds[i] = MALFORMED;
        r.messages[i] = `not valid JSON (${(err as Error).message})`;
        continue;
      }
      if (typeof row !== 'object' || row === null || Array.isArray(row) || typeof (row as { text?: unknown }).text !== 'string') {
        r.kinds[i] = MALFORMED;
        r.messages[i] = 'expected a JSON object with a string "text" field';
        continue;
      }
      const { text: t, id: given, ...rest } = row as { text: string; id?: unknown };
      if (depthOf(rest) > MAX_FIELD_DEPTH) {
        r.kinds[i] = MALFORMED;
        r.messages[i] = `its fields are nested deeper than ${MAX_FIELD_DEPTH} levels`;
        continue;
      }
      text = t;
      if (typeof given === 'string' || typeof given === 'number') r.ids[i] = String(given);
      if (Object.keys(rest).length > 0) r.fields[i] = rest;
    } else text = raw;
    r.kinds[i] = ROW;
    const outcome = processRow(text, plan, encode);
    let flags = outcome.redacted ? REDACTED : 0;
    if (outcome.fingerprint) {
      flags |= FINGERPRINTED | (outcome.redactedAtDedup ? REDACTED_AT_DEDUP : 0);
      r.hashes.set(outcome.fingerprint.hash, i * 20);
      if (near && outcome.fingerprint.signature) {
        r.signatures.set(outcome.fingerprint.signature, i * 64);
        r.bands.set(outcome.fingerprint.bands!, i * 8);
      }
    }
    r.flags[i] = flags;
    // A dropped row's text and tokens are not needed back (NFKC may have made it 18 times longer).
    if (outcome.dropped) r.dropped[i] = outcome.dropped;
    else {
      r.texts[i] = outcome.text;
      tokens.push(outcome.tokens);
      total += outcome.tokens.length;
    }
    r.ends[i] = total;
  }
  r.tokens = new Int32Array(total);
  let at = 0;
  for (const t of tokens) {
    r.tokens.set(t, at);
    at += t.length;
  }
  return { result: r, transfer: [r.kinds, r.flags, r.tokens, r.ends, r.hashes, r.signatures, r.bands].map((a) => a.buffer as ArrayBuffer) };
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

parentPort!.on('message', ({ id, job }: { id: number; job: PipelineJob }) => {
  const work = job.op === 'rows' ? rows(job.batch) : Promise.resolve(encodeShard(job.columns)).then((bytes) => ({ result: bytes, transfer: [bytes.buffer as ArrayBuffer] }));
  work.then(
    ({ result, transfer }) => parentPort!.postMessage({ id, result }, transfer),
    (err: unknown) => parentPort!.postMessage({ id, error: (err as Error).message }),
  );
});
