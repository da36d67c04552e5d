import { describe, expect, it } from 'vitest';
import { encode as referenceEncode, decode } from 'gpt-tokenizer/encoding/cl100k_base';
import { loadTokenizer, MAX_PIECE_CHARS } from '../../../src/engines/datasets/tokenizer.js';

describe('tokenizer', () => {
  it('gives the reference tokens for ordinary text, long or short', async () => {
    const t = await loadTokenizer('cl100k_base');
    const prose = 'The quick brown fox, 1234567 times: "jumps"!\n\n  Über naïve café — 👋 emoji.\t'.repeat(500);
    expect(t.encode(prose)).toEqual(referenceEncode(prose));
    expect(t.encode('short')).toEqual(referenceEncode('short'));
  });

  it('cuts only runs longer than MAX_PIECE_CHARS, and still round-trips the text', async () => {
    const t = await loadTokenizer('cl100k_base');
    const text = 'prefix ' + 'A'.repeat(MAX_PIECE_CHARS * 3 + 17) + ' ' + '-'.repeat(1000) + ' 😀'.repeat(400) + ' end';
    expect(decode(t.encode(text))).toBe(text);
  });

  // Cost ratio, as for the PII detector: BPE on one long piece is quadratic (160k letters
  // took 18 s in 0.7.0); with the cuts, 1 MiB costs about 16 × 64 KiB.
  for (const [name, unit] of [['letters', 'y'], ['spaces', ' '], ['dashes', '-'], ['mixed', 'ab1 ']] as const) {
    it(`${name}: 1 MiB costs about 16 × 64 KiB`, async () => {
      const t = await loadTokenizer('cl100k_base');
      const cost = (text: string, rounds: number) => {
        let best = Infinity;
        for (let r = 0; r < 3; r++) {
          const t0 = performance.now();
          for (let i = 0; i < rounds; i++) t.encode(text);
          best = Math.min(best, (performance.now() - t0) / rounds);
        }
        return best;
      };
      const small = unit.repeat((64 * 1024) / unit.length);
      const large = unit.repeat((1024 * 1024) / unit.length);
      cost(small, 2);
      // Linear is 16, the quadratic BPE of 0.7.0 256 and more. 6× slack: the large encode makes
      // arrays whose garbage collection is noisy — idle runs measure 12–36 for letters, a loaded
      // CI run under Node 24 measured 61.
      expect(cost(large, 1) / cost(small, 4)).toBeLessThan(96);
    });
  }
});
