// The per-row text steps of the dataset pipeline. Each is a pure function of one row's text,
// so a run is deterministic and a restarted job produces the same output.

/** Unicode NFKC, every run of whitespace one space, trimmed; case is kept. */
export function normalizeText(text: string): string {
  return text.normalize('NFKC').replace(/\s+/gu, ' ').trim();
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
  const length = [...text].length;
  if (length < o.minChars) return 'too_short';
  if (length > o.maxChars) return 'too_long';
  const symbols = text.match(/[^\p{L}\p{N}\s]/gu)?.length ?? 0;
  if (length > 0 && symbols / length > o.maxSymbolRatio) return 'symbols';
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  if (lines.length >= 3 && (lines.length - new Set(lines).size) / lines.length > o.maxRepeatedLineRatio) return 'repeated_lines';
  return undefined;
}
