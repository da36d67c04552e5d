import { InvalidInput } from '../../../engines/errors.js';
import { checkVector, type UpsertBatch } from '../../../engines/vectors/upsert-batch.js';
import { pointId } from './point-id.js';

// A Qdrant upsert body (`points` or `batch`) as a Strata upsert batch: ids canonicalised,
// vectors checked against the collection's dimensions into one float32 matrix, payloads as
// metadata. Pure, so a big body is decoded and checked on the decode worker (the text worker
// imports this), never on the event loop.

type Json = Record<string, unknown>;

export function toQdrantBatch(body: unknown, dimensions: number, maxBatch: number, vectorName: string | undefined): UpsertBatch {
  const b = object(body, 'body');
  let points: Array<{ id: unknown; vector: unknown; payload: unknown }>;
  if (Array.isArray(b.points)) {
    if (b.points.length > maxBatch) throw new InvalidInput(`at most ${maxBatch} points per call (vectors.max_batch); got ${b.points.length}`);
    points = b.points.map((p, i) => object(p, `points[${i}]`) as { id: unknown; vector: unknown; payload: unknown });
  } else if (b.batch !== undefined) {
    const batch = object(b.batch, 'batch');
    if (!Array.isArray(batch.ids) || !Array.isArray(batch.vectors)) throw new InvalidInput('Format error in JSON body: batch needs ids and vectors');
    if (batch.ids.length > maxBatch) throw new InvalidInput(`at most ${maxBatch} points per call (vectors.max_batch); got ${batch.ids.length}`);
    const payloads = Array.isArray(batch.payloads) ? batch.payloads : [];
    if (batch.vectors.length !== batch.ids.length || (batch.payloads && payloads.length !== batch.ids.length)) throw new InvalidInput('Wrong input: batch ids, vectors and payloads must be of one length');
    const vectors = batch.vectors;
    points = batch.ids.map((id, i) => ({ id, vector: vectors[i], payload: payloads[i] }));
  } else throw new InvalidInput('Format error in JSON body: expected points or batch');
  const flat = new Float32Array(points.length * dimensions);
  const items = points.map((p, i) => {
    const id = pointId(p.id, `points[${i}].id`);
    checkVector(vectorOf(p.vector, vectorName, `points[${i}].vector`), dimensions, `points[${i}].vector`, flat, i * dimensions);
    if (p.payload !== undefined && p.payload !== null && (typeof p.payload !== 'object' || Array.isArray(p.payload))) throw new InvalidInput(`points[${i}].payload: expected an object`);
    // JSON answers omit undefined, and so does the stored payload (LangChain sends customPayload: undefined).
    const metadata = p.payload ? (JSON.parse(JSON.stringify(p.payload)) as Json) : undefined;
    if (metadata && JSON.stringify(metadata).length > 64 * 1024) throw new InvalidInput(`points[${i}].payload: at most 64 KiB of JSON`);
    return metadata ? { id, metadata } : { id };
  });
  return { items, flat };
}

/** A point's vector as sent: a list, or `{"": list}` (or `{<the collection's vector name>: list}`). */
export function vectorOf(v: unknown, vectorName: string | undefined, where: string): ArrayLike<number> {
  if (Array.isArray(v)) return v as number[];
  if (typeof v === 'object' && v !== null) {
    const named = v as Json;
    const keys = Object.keys(named);
    if (keys.length === 1 && (keys[0] === (vectorName ?? '') || keys[0] === '')) return vectorOf(named[keys[0]!], vectorName, where);
    throw new InvalidInput(`Wrong input: ${where}: Not existing vector name error: ${keys.join(', ').slice(0, 80)}`);
  }
  throw new InvalidInput(`Format error in JSON body: ${where} must be a list of numbers`);
}

function object(v: unknown, where: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidInput(`Format error in JSON body: ${where} must be an object`);
  return v as Json;
}
