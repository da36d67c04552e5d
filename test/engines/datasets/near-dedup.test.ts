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
      const finder = new DuplicateFinder(join(tempDir(), 'dedup.db'), 0.8);
      const t0 = performance.now();
      for (const l of lines.slice(0, n)) await finder.check(l);
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
    const finder = new DuplicateFinder(join(tempDir(), 'dedup.db'), 0.8);
    for (const l of lines) expect(await finder.check(l)).toBeUndefined();
    // One word changed in the newest line: found among the most recent candidates.
    const last = lines[lines.length - 1]!;
    expect(await finder.check(last.replace(/u\w+$/, 'changed'))).toBe('near');
    finder.close();
  });

  it('splits words where 0.12 split them (JavaScript \\s), without building word strings', () => {
    // 0.12's word split, kept here as the reference.
    const reference = (text: string) => text.split(/\s+/u).filter(Boolean);
    const spaces = [' ', '\t', '\n', '\v', '\f', '\r', '\u00a0', '\u1680', '\u2000', '\u2005', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff'];
    const notSpaces = ['\u200b', '\u180e', '\u0085', 'x', '😀'];
    for (const sp of [...spaces, ...notSpaces]) {
      const text = `${sp}alpha${sp}beta gamma${sp}${sp}delta epsilon${sp}`;
      const words = reference(text);
      const rebuilt = minhash(words.join(' '));
      expect(Array.from(minhash(text)), JSON.stringify(sp)).toEqual(Array.from(rebuilt));
    }
    expect(Array.from(minhash(''))).toEqual(Array.from(minhash('   ')));
  });

  it('answers the same with a budget that forces spills as with everything in memory', async () => {
    let seed = 3;
    const rnd = () => (seed = (Math.imul(seed, 48271) % 2147483647) >>> 0);
    const base = Array.from({ length: 1500 }, (_, i) => `${Array.from({ length: 25 }, () => `w${rnd() % 500}`).join(' ')} ${i}`);
    const keys: string[] = [];
    for (let i = 0; i < 4000; i++) {
      const r = rnd() % 100;
      const earlier = base[rnd() % base.length]!;
      keys.push(r < 8 ? earlier : r < 14 ? earlier.replace(/^\S+/, 'changed') : base[i % base.length]! + (i >= base.length ? ` again ${i}` : ''));
    }
    const answers = async (memoryBytes: number) => {
      const finder = new DuplicateFinder(join(tempDir(), 'dedup.db'), 0.8, memoryBytes);
      const out: Array<string | undefined> = [];
      for (const k of keys) out.push(await finder.check(k));
      const { spills, diskLookups } = finder;
      finder.close();
      return { out, spills, diskLookups };
    };
    const inMemory = await answers(64 * 1024 * 1024);
    const spilled = await answers(96 * 1024);
    expect(inMemory.spills).toBe(0);
    expect(spilled.spills).toBeGreaterThan(5);
    expect(spilled.diskLookups).toBeGreaterThan(0);
    expect(spilled.out).toEqual(inMemory.out);
    expect(inMemory.out.filter((a) => a === 'exact').length).toBeGreaterThan(100);
    expect(inMemory.out.filter((a) => a === 'near').length).toBeGreaterThan(50);
  });
});
