import { describe, expect, it } from 'vitest';
import { DEFAULT_FILTER, dedupKey, filterReason, normalizeText } from '../../../src/engines/datasets/text-steps.js';
import { readLines } from '../../../src/engines/datasets/line-reader.js';
import { minhash, similarity } from '../../../src/engines/datasets/near-dedup.js';

describe('text steps', () => {
  it('normalize: NFKC, whitespace collapsed, trimmed, case kept', () => {
    expect(normalizeText('  Ｈｅｌｌｏ\u00a0\u00a0World\t\n ﬁne  ')).toBe('Hello World fine');
    expect(dedupKey(' HELLO   world ')).toBe(dedupKey('hello world'));
  });

  it('filter: length, symbol ratio and repeated lines', () => {
    const o = { ...DEFAULT_FILTER, minChars: 5, maxChars: 20 };
    expect(filterReason('abc', o)).toBe('too_short');
    expect(filterReason('x'.repeat(21), o)).toBe('too_long');
    expect(filterReason('$$$ %%% ^^ ab', o)).toBe('symbols');
    expect(filterReason('ab\nab\nab\ncd', { ...o, maxChars: 100 })).toBe('repeated_lines');
    expect(filterReason('a fine row', o)).toBeUndefined();
    // Characters, not UTF-16 units: one emoji is one character.
    expect(filterReason('😀😀😀😀😀', { ...o, maxSymbolRatio: 1 })).toBeUndefined();
  });

  it('MinHash estimates Jaccard similarity: near copies score high, unrelated texts low', () => {
    const a = 'the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat in the sun';
    const b = a.replace('lazy', 'sleepy');
    const c = 'completely different words about databases replication and write ahead logs in storage engines';
    expect(similarity(minhash(a), minhash(b))).toBeGreaterThan(0.6);
    expect(similarity(minhash(a), minhash(c))).toBeLessThan(0.1);
    expect(similarity(minhash(a), minhash(a))).toBe(1);
  });

  it('lines are numbered from 1 across chunk boundaries, UTF-8 split mid-character, CRLF and no final newline', async () => {
    const text = Buffer.from('one\r\ntwo é\n\nfour');
    async function* chunks() {
      for (let i = 0; i < text.length; i += 3) yield text.subarray(i, i + 3);
    }
    const lines = [];
    for await (const l of readLines(chunks())) lines.push([l.line, l.text]);
    expect(lines).toEqual([[1, 'one'], [2, 'two é'], [3, ''], [4, 'four']]);
  });

  it('a byte-order mark is not part of line 1, and a line too long is caught inside one chunk too (review)', async () => {
    const text = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`{"text":"a"}\n${'x'.repeat(50)}\nlast`)]);
    const lines = [];
    for await (const l of readLines((async function* () { yield text; })(), 20)) lines.push([l.line, l.text, l.tooLong ?? false]);
    expect(lines).toEqual([[1, '{"text":"a"}', false], [2, '', true], [3, 'last', false]]);
  });
});

