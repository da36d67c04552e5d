import { isSpace } from './text-steps.js';

// cl100k_base and o200k_base through gpt-tokenizer, whose encodings ship inside the package
// (nothing is downloaded at run time). Loaded on first use: each table is tens of MB.

export type TokenizerName = 'cl100k_base' | 'o200k_base';

export interface Tokenizer {
  encode(text: string): number[];
  decode(tokens: number[]): string;
}

const loaded = new Map<TokenizerName, Promise<Tokenizer>>();

/**
 * Byte-pair encoding of one pre-tokenized piece is quadratic in the piece's length (160k
 * letters in a row took 18 s), and the pre-tokenizer leaves a run of letters, of whitespace or
 * of punctuation whole, however long. Such runs are cut every this many characters before
 * encoding, which keeps the cost linear. Only text with a run this long (no word is; a DNA
 * sequence or a line of dashes may be) tokenizes differently from the reference tokenizer,
 * and only at the cuts.
 */
export const MAX_PIECE_CHARS = 256;
const RUNS = /[\p{L}\p{M}]+|\p{N}+|\s+|[^\s\p{L}\p{M}\p{N}]+/gu;

export function loadTokenizer(name: TokenizerName): Promise<Tokenizer> {
  let t = loaded.get(name);
  if (!t) {
    t = (name === 'cl100k_base' ? import('gpt-tokenizer/encoding/cl100k_base') : import('gpt-tokenizer/encoding/o200k_base')).then((m) => ({
      encode: (text: string) => boundedEncode(m.encode, text),
      decode: (tokens: number[]) => m.decode(tokens),
    }));
    loaded.set(name, t);
  }
  return t;
}

function boundedEncode(encode: (text: string) => number[], text: string): number[] {
  if (text.length <= MAX_PIECE_CHARS || !hasLongRun(text)) return encode(text);
  const cuts: number[] = [];
  for (const m of text.matchAll(RUNS)) {
    // Digits are grouped by threes by the pre-tokenizer itself.
    if (m[0].length <= MAX_PIECE_CHARS || /^\p{N}/u.test(m[0])) continue;
    const end = m.index + m[0].length;
    for (let at = m.index + MAX_PIECE_CHARS; at < end; at += MAX_PIECE_CHARS) {
      // Never between the halves of a surrogate pair.
      cuts.push(text.charCodeAt(at) >= 0xdc00 && text.charCodeAt(at) <= 0xdfff ? at + 1 : at);
    }
  }
  if (cuts.length === 0) return encode(text);
  const tokens: number[] = [];
  let from = 0;
  for (const cut of [...cuts, text.length]) {
    for (const t of encode(text.slice(from, cut))) tokens.push(t);
    from = cut;
  }
  return tokens;
}

/**
 * Whether any run of whitespace or of non-whitespace is longer than MAX_PIECE_CHARS: every
 * run RUNS can find lies inside one of those, so without one there is nothing to cut. One
 * pass over the character codes; matching RUNS over every row cost 4 % of a job.
 */
function hasLongRun(text: string): boolean {
  let run = 0;
  let space = false;
  for (let i = 0; i < text.length; i++) {
    const s = isSpace(text.charCodeAt(i));
    if (s === space) {
      if (++run > MAX_PIECE_CHARS) return true;
    } else {
      space = s;
      run = 1;
    }
  }
  return false;
}
