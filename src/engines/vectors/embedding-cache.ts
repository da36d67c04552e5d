import { createHash } from 'node:crypto';
import type { Cache } from '../cache/cache.js';

// Embeddings already computed, by (model, sha256 of the text), so the same text is never sent
// to an embedding model twice. A cache, not a store: bounded (LRU by bytes in memory, or
// Redis with a TTL), and a miss only costs a recomputation. Values are kept as float32 or,
// when configured, float16 — half the bytes, about three decimal digits, plenty for
// similarity search.

export type EmbeddingDtype = 'f32' | 'f16';

const TAG: Record<EmbeddingDtype, number> = { f32: 1, f16: 2 };

export class EmbeddingCache {
  constructor(
    private readonly cache: Cache,
    private readonly options: { dtype: EmbeddingDtype; ttlSeconds: number },
    private readonly events: { hit?(n: number): void; miss?(n: number): void } = {},
  ) {}

  async put(model: string, items: Array<{ text: string; values: ArrayLike<number> }>): Promise<number> {
    try {
      await Promise.all(items.map((it) => this.cache.set(key(model, it.text), encode(it.values, this.options.dtype), this.options.ttlSeconds)));
    } catch {
      // An unreachable cache stores nothing; callers recompute later.
    }
    return items.length;
  }

  /** One entry per text, in order: the values, or null when not cached. */
  async lookup(model: string, texts: string[]): Promise<Array<number[] | null>> {
    let found: Array<Buffer | undefined>;
    try {
      found = await this.cache.getMany(texts.map((t) => key(model, t)));
    } catch {
      found = texts.map(() => undefined);
    }
    const values = found.map((b) => (b ? decode(b) : null));
    const hits = values.filter((v) => v !== null).length;
    if (hits) this.events.hit?.(hits);
    if (texts.length - hits) this.events.miss?.(texts.length - hits);
    return values;
  }
}

function key(model: string, text: string): string {
  return `emb:${model}:${createHash('sha256').update(text).digest('hex')}`;
}

function encode(values: ArrayLike<number>, dtype: EmbeddingDtype): Buffer {
  const n = values.length;
  const out = Buffer.alloc(1 + n * (dtype === 'f32' ? 4 : 2));
  out[0] = TAG[dtype];
  for (let i = 0; i < n; i++) {
    if (dtype === 'f32') out.writeFloatLE(values[i]!, 1 + i * 4);
    else out.writeUInt16LE(toHalf(values[i]!), 1 + i * 2);
  }
  return out;
}

function decode(b: Buffer): number[] {
  const out: number[] = [];
  if (b[0] === TAG.f32) for (let i = 1; i + 4 <= b.length; i += 4) out.push(b.readFloatLE(i));
  else for (let i = 1; i + 2 <= b.length; i += 2) out.push(fromHalf(b.readUInt16LE(i)));
  return out;
}

// IEEE 754 binary16 conversion (Node 20 has no Float16Array). Round to nearest even;
// overflow becomes ±Infinity, tiny values become subnormals or ±0.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
