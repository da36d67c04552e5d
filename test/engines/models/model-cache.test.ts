import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ModelCache } from '../../../src/engines/models/model-cache.js';
import { tempDir } from '../../helpers/daemon.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function read(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Like an object store's get: the whole object in two chunks, or the inclusive range asked for. */
function source(data: Buffer, counter: { n: number }, delayMs = 50) {
  return async (range?: { start: number; end: number }) => {
    counter.n++;
    await new Promise((r) => setTimeout(r, delayMs));
    if (range) return Readable.from([data.subarray(range.start, range.end + 1)]);
    return Readable.from([data.subarray(0, 1000), data.subarray(1000)]);
  };
}

describe('model cache', () => {
  it('20 concurrent cold reads cause one fetch, and all get the bytes', async () => {
    const cache = await ModelCache.open(tempDir(), 10_000_000, () => new Set());
    const data = randomBytes(200_000);
    const fetches = { n: 0 };
    const results = await Promise.all(Array.from({ length: 20 }, () => cache.read(sha(data), data.length, source(data, fetches)).then(read)));
    expect(fetches.n).toBe(1);
    for (const r of results) expect(r.equals(data)).toBe(true);
    expect(cache.stats()).toMatchObject({ misses: 20, hits: 0, entries: 1, used_bytes: data.length });
    const range = await read(await cache.read(sha(data), data.length, source(data, fetches), { start: 10, end: 19 }));
    expect(range.equals(data.subarray(10, 20))).toBe(true);
    expect(fetches.n).toBe(1);
    expect(cache.stats().hits).toBe(1);
  });

  it('checks sha256 on fill: corrupt bytes are refused and not cached', async () => {
    const dir = tempDir();
    const cache = await ModelCache.open(dir, 10_000_000, () => new Set());
    const data = randomBytes(5000);
    const fetches = { n: 0 };
    // The first reader gets the bytes as they arrive, so the mismatch breaks its stream at the end.
    await expect(read(await cache.read('f'.repeat(64), data.length, source(data, fetches)))).rejects.toThrow(/corrupt/);
    // A later reader is refused before any byte: the tier is not asked again for a while.
    await expect(cache.read('f'.repeat(64), data.length, source(data, fetches), { start: 0, end: 9 })).rejects.toThrow(/corrupt/);
    expect(cache.has('f'.repeat(64))).toBe(false);
    expect(readdirSync(dir).filter((f) => f !== '.tmp')).toEqual([]);
  });

  it('the reader that causes a fill gets the first bytes before the fetch has finished', async () => {
    const cache = await ModelCache.open(tempDir(), 10_000_000, () => new Set());
    const data = randomBytes(100_000);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = async () =>
      Readable.from(
        (async function* () {
          yield data.subarray(0, 40_000);
          await held;
          yield data.subarray(40_000);
        })(),
      );
    const stream = await cache.read(sha(data), data.length, slow);
    const first = await new Promise<Buffer>((resolve) => stream.once('data', (c: Buffer) => resolve(c)));
    expect(first.equals(data.subarray(0, 40_000))).toBe(true);
    expect(cache.has(sha(data))).toBe(false);
    stream.pause();
    release();
    const rest = await read(stream);
    expect(Buffer.concat([first, rest]).equals(data)).toBe(true);
    await expect.poll(() => cache.has(sha(data))).toBe(true);
  });

  it('evicts least recently used entries at capacity, never a pinned one', async () => {
    const blobs = Array.from({ length: 5 }, () => randomBytes(30_000));
    const pinned = new Set([sha(blobs[0]!)]);
    const cache = await ModelCache.open(tempDir(), 100_000, () => pinned);
    const fetches = { n: 0 };
    for (const b of blobs) await read(await cache.read(sha(b), b.length, source(b, fetches, 0)));
    // 5 × 30 KB into 100 KB: two had to go, the oldest unpinned ones.
    expect(cache.stats().evictions).toBe(2);
    expect(cache.stats().used_bytes).toBeLessThanOrEqual(100_000);
    expect(cache.has(sha(blobs[0]!))).toBe(true);
    expect(cache.has(sha(blobs[1]!))).toBe(false);
    expect(cache.has(sha(blobs[2]!))).toBe(false);
    expect(cache.has(sha(blobs[4]!))).toBe(true);
  });

  it('rebuilds its index from the directory after a restart', async () => {
    const dir = tempDir();
    const data = randomBytes(10_000);
    const fetches = { n: 0 };
    const first = await ModelCache.open(dir, 1_000_000, () => new Set());
    await read(await first.read(sha(data), data.length, source(data, fetches)));
    const second = await ModelCache.open(dir, 1_000_000, () => new Set());
    expect(second.stats()).toMatchObject({ entries: 1, used_bytes: data.length });
    expect((await read(await second.read(sha(data), data.length, source(data, fetches)))).equals(data)).toBe(true);
    expect(fetches.n).toBe(1);
    expect(second.stats().hits).toBe(1);
  });

  it('a capacity lowered across a restart trims unpinned entries only', async () => {
    const dir = tempDir();
    const a = randomBytes(30_000);
    const b = randomBytes(30_000);
    const fetches = { n: 0 };
    const first = await ModelCache.open(dir, 1_000_000, () => new Set());
    await read(await first.read(sha(a), a.length, source(a, fetches, 0)));
    await read(await first.read(sha(b), b.length, source(b, fetches, 0)));
    const second = await ModelCache.open(dir, 40_000, () => new Set([sha(a)]));
    expect(second.stats().entries).toBe(2); // nothing evicted before the pinned set is known
    await second.trim();
    expect(second.has(sha(a))).toBe(true);
    expect(second.has(sha(b))).toBe(false);
  });

  it('streams a file larger than the whole cache without caching it', async () => {
    const cache = await ModelCache.open(tempDir(), 1000, () => new Set());
    const data = randomBytes(5000);
    const fetches = { n: 0 };
    expect((await read(await cache.read(sha(data), data.length, source(data, fetches), { start: 900, end: 1099 }))).equals(data.subarray(900, 1100))).toBe(true);
    expect(cache.stats().entries).toBe(0);
  });

  it('a reader that never reads holds up neither the fill nor any other reader', async () => {
    const cache = await ModelCache.open(tempDir(), 100_000_000, () => new Set());
    const data = randomBytes(8 * 1024 * 1024);
    const chunks = async () => Readable.from(Array.from({ length: 128 }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536)));
    const stalled = await cache.read(sha(data), data.length, chunks);
    stalled.pause();
    const other = await read(await cache.read(sha(data), data.length, chunks));
    expect(other.equals(data)).toBe(true);
    const ranged = await read(await cache.read(sha(data), data.length, chunks, { start: 5_000_000, end: 5_000_099 }));
    expect(ranged.equals(data.subarray(5_000_000, 5_000_100))).toBe(true);
    await expect.poll(() => cache.has(sha(data))).toBe(true);
    expect((await read(stalled)).equals(data)).toBe(true);
  });

  it('a fill that fails partway hands its readers over to the object tier at the offset they reached', async () => {
    const cache = await ModelCache.open(tempDir(), 100_000_000, () => new Set());
    const data = randomBytes(300_000);
    const fetches: Array<{ start: number; end: number } | undefined> = [];
    const flaky = async (range?: { start: number; end: number }) => {
      fetches.push(range);
      // The tier itself is fine; only the first copy (the cache fill) meets a full disk.
      if (range || fetches.length > 1) return Readable.from([data.subarray(range?.start ?? 0, (range?.end ?? data.length - 1) + 1)]);
      return Readable.from(
        (async function* () {
          yield data.subarray(0, 100_000);
          throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
        })(),
      );
    };
    const whole = await read(await cache.read(sha(data), data.length, flaky));
    expect(whole.equals(data)).toBe(true);
    expect(cache.has(sha(data))).toBe(false);
    expect(fetches[0]).toBeUndefined();
    expect(fetches[1]?.end).toBe(data.length - 1);
    // After a full disk, reads go straight to the tier for a while instead of failing fills.
    const again = await read(await cache.read(sha(data), data.length, flaky));
    expect(again.equals(data)).toBe(true);
    expect(fetches).toHaveLength(3);
    expect(fetches[2]).toBeUndefined();
  });

  it('a cache file truncated behind its back is a miss, filled again, never served short', async () => {
    const dir = tempDir();
    const cache = await ModelCache.open(dir, 10_000_000, () => new Set());
    const data = randomBytes(300_000);
    const fetches = { n: 0 };
    await read(await cache.read(sha(data), data.length, source(data, fetches, 0)));
    expect(cache.has(sha(data))).toBe(true);
    truncateSync(join(dir, sha(data)), 1000);
    const again = await read(await cache.read(sha(data), data.length, source(data, fetches, 0)));
    expect(again.equals(data)).toBe(true);
    expect(fetches.n).toBe(2);
    expect(statSync(join(dir, sha(data))).size).toBe(data.length);
  });

  it('readers of a tiny file that fills in an instant all get it whole (a reader joins the fill before it can end)', async () => {
    const cache = await ModelCache.open(tempDir(), 10_000_000, () => new Set());
    for (let round = 0; round < 20; round++) {
      const data = randomBytes(100 + round);
      const instant = async () => Readable.from([data]);
      const results = await Promise.all(Array.from({ length: 8 }, () => cache.read(sha(data), data.length, instant).then(read)));
      for (const r of results) expect(r.equals(data)).toBe(true);
    }
  });

  describe('fills from a remote tier: parallel ranged GETs', () => {
    /** A tier that answers ranges in small chunks, slowly, and counts the GETs in flight. */
    function tier(data: Buffer, opts: { failPart?: number; corruptPart?: number } = {}) {
      const seen: Array<{ start: number; end: number } | undefined> = [];
      let inFlight = 0;
      let maxInFlight = 0;
      let failed = false;
      const get = async (range?: { start: number; end: number }) => {
        seen.push(range);
        const r = range ?? { start: 0, end: data.length - 1 };
        const part = Math.floor(r.start / 65_536);
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        return Readable.from(
          (async function* () {
            try {
              for (let at = r.start; at <= r.end; at += 16_384) {
                await new Promise((res) => setTimeout(res, 2));
                // Once: the reader's handover to the tier afterwards reads the same bytes fine.
                if (range && part === opts.failPart && at > r.start && !failed) {
                  failed = true;
                  throw new Error('connection reset by the tier');
                }
                const chunk = Buffer.from(data.subarray(at, Math.min(r.end + 1, at + 16_384)));
                if (range && part === opts.corruptPart) chunk[0] = chunk[0]! ^ 1;
                yield chunk;
              }
            } finally {
              inFlight--;
            }
          })(),
        );
      };
      return { get, seen, max: () => maxInFlight };
    }

    it('reads the object as ranged GETs, several at once, and caches it whole and verified', async () => {
      const cache = await ModelCache.open(tempDir(), 100_000_000, () => new Set());
      cache.ranged = { partBytes: 65_536, width: 3 };
      const data = randomBytes(65_536 * 10 + 123);
      const t = tier(data);
      const whole = await read(await cache.read(sha(data), data.length, t.get));
      expect(whole.equals(data)).toBe(true);
      expect(t.seen).toHaveLength(11);
      expect(t.seen.every((r) => r !== undefined)).toBe(true);
      expect(t.seen[10]).toEqual({ start: 655_360, end: data.length - 1 });
      expect(t.max()).toBe(3);
      await expect.poll(() => cache.has(sha(data))).toBe(true);
      const hit = await read(await cache.read(sha(data), data.length, t.get, { start: 100_000, end: 100_009 }));
      expect(hit.equals(data.subarray(100_000, 100_010))).toBe(true);
      expect(t.seen).toHaveLength(11);
    });

    it('a part that fails hands the reader over to the tier; nothing is cached', async () => {
      const cache = await ModelCache.open(tempDir(), 100_000_000, () => new Set());
      cache.ranged = { partBytes: 65_536, width: 3 };
      const data = randomBytes(65_536 * 6);
      const t = tier(data, { failPart: 4 });
      const whole = await read(await cache.read(sha(data), data.length, t.get));
      expect(whole.equals(data)).toBe(true);
      expect(cache.has(sha(data))).toBe(false);
    });

    it('a corrupt part breaks the transfer at the end and is not cached', async () => {
      const dir = tempDir();
      const cache = await ModelCache.open(dir, 100_000_000, () => new Set());
      cache.ranged = { partBytes: 65_536, width: 3 };
      const data = randomBytes(65_536 * 6);
      const t = tier(data, { corruptPart: 2 });
      await expect(read(await cache.read(sha(data), data.length, t.get))).rejects.toThrow(/corrupt/);
      expect(cache.has(sha(data))).toBe(false);
      expect(readdirSync(dir).filter((f) => f !== '.tmp')).toEqual([]);
    });

    it('files smaller than two parts are one GET', async () => {
      const cache = await ModelCache.open(tempDir(), 100_000_000, () => new Set());
      cache.ranged = { partBytes: 65_536, width: 3 };
      const data = randomBytes(100_000);
      const t = tier(data);
      expect((await read(await cache.read(sha(data), data.length, t.get))).equals(data)).toBe(true);
      expect(t.seen).toEqual([undefined]);
    });
  });
});
