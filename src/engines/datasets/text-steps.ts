// The per-row text steps of the dataset pipeline. Each is a pure function of one row's text,
// so a run is deterministic and a restarted job produces the same output.

/** Unicode NFKC, every run of whitespace one space, trimmed; case is kept. */
export function normalizeText(text: string): string {
  // Most rows are printable ASCII with single spaces between words, which this leaves as
  // they are: one scan says so, and the NFKC call and the regex (13 % of a job) are skipped.
  let plain = text.length > 0 && text.charCodeAt(0) !== 32 && text.charCodeAt(text.length - 1) !== 32;
  for (let i = 0; plain && i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 126 || c < 32 || (c === 32 && text.charCodeAt(i + 1) === 32)) plain = false;
  }
  return plain ? text : text.normalize('NFKC').replace(/\s+/gu, ' ').trim();
}

/** The exact-duplicate key: normalized and case-folded (so "Hello" and "hello " are one row). */
export function dedupKey(text: string): string {
  return normalizeText(text).toLowerCase();
}

export interface FilterOptions {
  minChars: number;
  maxChars: number;
  /** Rows where characters that are neither letters, digits nor whitespace exceed this share. */
  maxSymbolRatio: number;
  /** Rows of 3+ lines where repeated lines exceed this share (boilerplate, spam). */
  maxRepeatedLineRatio: number;
}

export const DEFAULT_FILTER: FilterOptions = { minChars: 1, maxChars: 1_000_000, maxSymbolRatio: 0.3, maxRepeatedLineRatio: 0.3 };

/** Why a row is dropped, or undefined when it passes. */
export function filterReason(text: string, o: FilterOptions): 'too_short' | 'too_long' | 'symbols' | 'repeated_lines' | undefined {
  const length = codePoints(text);
  if (length < o.minChars) return 'too_short';
  if (length > o.maxChars) return 'too_long';
  const symbols = text.match(/[^\p{L}\p{N}\s]/gu)?.length ?? 0;
  if (length > 0 && symbols / length > o.maxSymbolRatio) return 'symbols';
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  if (lines.length >= 3 && (lines.length - new Set(lines).size) / lines.length > o.maxRepeatedLineRatio) return 'repeated_lines';
  return undefined;
}

/** Code points, as `[...text].length` counts them, without building the array. */
function codePoints(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** Whether a UTF-16 code unit is in JavaScript's \s (WhiteSpace and LineTerminator). */
export function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}
