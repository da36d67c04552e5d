import { describe, expect, it } from 'vitest';
import { decodeBody } from '../../src/engines/body-decoder.js';

// The decoder's fast checks (native searches, sampled digit runs) must refuse exactly what the
// full scan did, wherever in the body the hostile part sits.

const json = (text: string) => decodeBody(Buffer.from(text), false, 64);

describe('body decoder', () => {
  it('refuses a number too large for a double at any offset, and keeps large finite ones', () => {
    for (let pad = 0; pad < 320; pad += 7) {
      const prefix = `{"p":"${'x'.repeat(pad)}","n":`;
      expect(() => json(`${prefix}${'9'.repeat(309)}}`), `offset ${pad}`).toThrow(/too large for a 64-bit float/);
      expect(() => json(`${prefix}-${'9'.repeat(400)}.5}`), `offset ${pad}`).toThrow(/too large/);
    }
    expect(() => json('[1.5, 2e400]')).toThrow(/body\.1 is too large/);
    expect(json(`{"n":1${'0'.repeat(308)}}`)).toEqual({ n: 1e308 });
    expect(json(`{"s":"${'9'.repeat(5000)}"}`)).toEqual({ s: '9'.repeat(5000) });
    const floats = Array.from({ length: 768 }, (_, i) => Math.sin(i) * 1e-7);
    expect(json(JSON.stringify({ vector: floats }))).toEqual({ vector: floats });
  });

  it('refuses nesting past the limit, and takes it at the limit', () => {
    expect(json('['.repeat(64) + ']'.repeat(64))).toBeDefined();
    expect(() => json('['.repeat(65) + ']'.repeat(65))).toThrow(/nested deeper than 64/);
    // Many brackets side by side are not depth.
    expect(json(JSON.stringify(Array.from({ length: 500 }, () => ({ a: [1] }))))).toHaveLength(500);
    expect(() => json(`{"a":"${'['.repeat(100)}","b":${'['.repeat(65)}${']'.repeat(65)}}`)).toThrow(/nested deeper/);
  });

  it('refuses lone surrogates and __proto__ keys spelled with escapes', () => {
    expect(() => json('{"a":"x\\ud800y"}')).toThrow(/lone UTF-16 surrogate/);
    expect(() => json('{"\\u005f_proto__":{"x":1}}')).toThrow(/names an object's prototype/);
    expect(json('{"a":"\\u00e9"}')).toEqual({ a: 'é' });
  });
});
