// cl100k_base and o200k_base through gpt-tokenizer, whose encodings ship inside the package
// (nothing is downloaded at run time). Loaded on first use: each table is tens of MB.

export type TokenizerName = 'cl100k_base' | 'o200k_base';

export interface Tokenizer {
  encode(text: string): number[];
  decode(tokens: number[]): string;
}

const loaded = new Map<TokenizerName, Promise<Tokenizer>>();

export function loadTokenizer(name: TokenizerName): Promise<Tokenizer> {
  let t = loaded.get(name);
  if (!t) {
    t = (name === 'cl100k_base' ? import('gpt-tokenizer/encoding/cl100k_base') : import('gpt-tokenizer/encoding/o200k_base')).then((m) => ({
      encode: (text: string) => m.encode(text),
      decode: (tokens: number[]) => m.decode(tokens),
    }));
    loaded.set(name, t);
  }
  return t;
}
