import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DuplicateFinder, minhash } from '../../../src/engines/datasets/near-dedup.js';
import { tempDir } from '../../helpers/daemon.js';

// Lines built to share one LSH bucket while being far from similar: a fixed set of words whose
// 3-gram hashes are the minima of the first band, then random words. Without a bound on the
// candidates compared per bucket, every line was compared with every earlier one (the review's
// 4000 such lines took 43 s, holding the event loop 9 s).
function collidingLines(n: number): string[] {
  // The band's minima come from a search over word triples with the detector's own hashing,
  // observed through minhash(): the triple whose line reaches the smallest first 8 values.
  const words = Array.from({ length: 400 }, (_, i) => `w${i.toString(36)}`);
  const best: Array<{ v: number; t: string }> = Array.from({ length: 8 }, () => ({ v: 2 ** 32, t: '' }));
  for (let a = 0; a < words.length; a++) {
    for (let b = 0; b < 60; b++) {
      const t = `${words[a]} ${words[(a * 7 + b) % words.length]} ${words[(a * 13 + b * 3) % words.length]}`;
      const sig = minhash(t);
      for (let i = 0; i < 8; i++) if (sig[i]! < best[i]!.v) best[i] = { v: sig[i]!, t };
    }
  }
  const core = best.map((x) => x.t).join(' | ');
  let seed = 1;
  const rnd = () => (seed = (Math.imul(seed, 48271) % 2147483647) >>> 0);
  return Array.from({ length: n }, () => `${core} | ${Array.from({ length: 30 }, () => `u${(rnd() % 1e8).toString(36)}`).join(' ')}`);
}

describe('near-duplicate detection', () => {
  it('lines crafted to share a bucket cost linear time, not quadratic', async () => {
    const lines = collidingLines(2400);
    const first = minhash(lines[0]!).slice(0, 8).join();
    expect(lines.slice(1, 50).filter((l) => minhash(l).slice(0, 8).join() === first).length).toBeGreaterThan(40);
    const cost = async (n: number) => {
      const finder = await DuplicateFinder.open(join(tempDir(), 'dedup.db'), 0.8);
      const t0 = performance.now();
      for (const l of lines.slice(0, n)) finder.check(l);
      const ms = performance.now() - t0;
      finder.close();
      return ms;
    };
    await cost(300);
    const small = Math.min(await cost(300), await cost(300));
    const large = Math.min(await cost(2400), await cost(2400));
    // 8× the lines: about 8× the time when bounded, 64× when every pair is compared.
    expect(large / small).toBeLessThan(24);
  });

  it('still finds a near duplicate among lines that share its bucket', async () => {
    const lines = collidingLines(100);
    const finder = await DuplicateFinder.open(join(tempDir(), 'dedup.db'), 0.8);
    for (const l of lines) expect(finder.check(l)).toBeUndefined();
    // One word changed in the newest line: found among the most recent candidates.
    const last = lines[lines.length - 1]!;
    expect(finder.check(last.replace(/u\w+$/, 'changed'))).toBe('near');
    finder.close();
  });
});
