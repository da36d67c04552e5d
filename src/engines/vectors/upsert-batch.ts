import { z } from 'zod';
import { InvalidInput } from '../errors.js';
import { zodRefusal } from '../zod-refusal.js';

// An upsert body as the engine takes it: ids and metadata, and every vector in one float32
// matrix. Built from the decoded body by the same code wherever it runs — in place for small
// bodies, on a worker thread for big ones (a 1000 × 768 batch is 768k numbers to check and
// convert; with the decoding, ~100 ms that no other request should wait behind).

export const vectorId = z.string().min(1).max(256);

// A plain loop, not z.array(z.number()): zod spends ~60 ms on a 1000 × 768 batch. Finiteness
// and dimensions are checked in toUpsertBatch / checkVector.
export const vectorValues = z
  .custom<number[] | Float32Array | Float64Array>(
    (v) => (Array.isArray(v) ? v.length > 0 && v.every((x) => typeof x === 'number') : (v instanceof Float32Array || v instanceof Float64Array) && v.length > 0),
    'values must be a non-empty array of numbers',
  )
  .meta({ type: 'array', items: { type: 'number' } });

export const vectorMetadata = z.record(z.string(), z.unknown()).refine((m) => JSON.stringify(m).length <= 64 * 1024, 'metadata is limited to 64 KiB of JSON');

export const upsertBody = z.strictObject({ vectors: z.array(z.strictObject({ id: vectorId, values: vectorValues, metadata: vectorMetadata.optional() })) });

export interface UpsertBatch {
  items: Array<{ id: string; metadata?: Record<string, unknown> | undefined }>;
  /** items.length × dimensions, row i is items[i]'s vector. */
  flat: Float32Array;
}

/** A vector as float32, or InvalidInput naming `where` (wrong length, not finite, overflows float32). */
export function checkVector(values: ArrayLike<number>, dimensions: number, where: string, into?: Float32Array, at = 0): Float32Array {
  if (values.length !== dimensions) throw new InvalidInput(`${where}: expected ${dimensions} dimensions, got ${values.length}`);
  const v = into ? into.subarray(at, at + dimensions) : new Float32Array(dimensions);
  // An indexed copy, not Float32Array.from: no iterator protocol, ten times faster on big batches.
  for (let i = 0; i < dimensions; i++) {
    v[i] = values[i]!;
    // Checked after the float32 rounding: 1e39 is finite as a double and Infinity as a float32.
    if (!Number.isFinite(v[i]!)) throw new InvalidInput(`${where}[${i}] is not a finite number (or overflows float32)`);
  }
  return v;
}

/** The validated batch, or InvalidInput with the path of the first problem. */
export function toUpsertBatch(body: unknown, dimensions: number, maxBatch: number): UpsertBatch {
  // Counted before anything else is checked: a megabyte of `{}` is 300k vectors, and checking
  // each of them first built a 66 MB refusal (review).
  const vectors = (body as { vectors?: unknown } | null)?.vectors;
  if (Array.isArray(vectors) && vectors.length > maxBatch) throw new InvalidInput(`at most ${maxBatch} items per call (vectors.max_batch); got ${vectors.length}`);
  const parsed = upsertBody.safeParse(body);
  if (!parsed.success) throw zodRefusal('body', parsed.error);
  const checked = parsed.data.vectors;
  const flat = new Float32Array(checked.length * dimensions);
  const items = checked.map((v, i) => {
    checkVector(v.values, dimensions, `vectors[${i}].values`, flat, i * dimensions);
    return v.metadata === undefined ? { id: v.id } : { id: v.id, metadata: v.metadata };
  });
  return { items, flat };
}
