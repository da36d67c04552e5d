import { detectPii, redactPii } from '../privacy/pii-detector.js';
import { fingerprint, type Fingerprint } from './near-dedup.js';
import { dedupKey, filterReason, normalizeText, type FilterOptions } from './text-steps.js';

// The steps of one row, in the order the job names them. Rows are processed on the pipeline's
// worker threads; duplicate detection needs the job's tables, which stay on the job's thread,
// so there the row's fingerprint comes back and the job checks it, in input order. Called with
// `isDuplicate` (tests, tools), the dedup step answers in place.

export const STEPS = ['normalize', 'dedup', 'filter', 'redact_pii', 'tokenize'] as const;
export type Step = (typeof STEPS)[number];

export interface RowPlan {
  steps: readonly Step[];
  filter: FilterOptions;
  /** Near duplicates too (a MinHash in the fingerprint), not only exact ones. */
  near: boolean;
}

export interface RowOutcome {
  text: string;
  tokens: number[];
  redacted: boolean;
  /** Set when the dedup step ran. */
  fingerprint?: Fingerprint;
  /**
   * Whether redaction had happened when the dedup step ran: what `redacted` would have been
   * had the row been found a duplicate there (a worker runs the later steps before the job
   * checks the fingerprint, and a duplicate's later redaction must not be counted).
   */
  redactedAtDedup?: boolean;
  /** Why the row goes no further: a duplicate (found in place) or a filter's reason. */
  dropped?: 'duplicate' | 'near_duplicate' | ReturnType<typeof filterReason>;
}

export function processRow(
  text: string,
  plan: RowPlan,
  encode: ((text: string) => number[]) | undefined,
  isDuplicate?: (fp: Fingerprint) => 'exact' | 'near' | undefined,
): RowOutcome {
  let tokens: number[] = [];
  let redacted = false;
  let fp: Fingerprint | undefined;
  let redactedAtDedup: boolean | undefined;
  for (const step of plan.steps) {
    if (step === 'normalize') text = normalizeText(text);
    else if (step === 'dedup') {
      fp = fingerprint(dedupKey(text), plan.near);
      redactedAtDedup = redacted;
      const dup = isDuplicate?.(fp);
      if (dup) return { text, tokens, redacted, fingerprint: fp, dropped: dup === 'near' ? 'near_duplicate' : 'duplicate' };
    } else if (step === 'filter') {
      const reason = filterReason(text, plan.filter);
      if (reason) return { text, tokens, redacted, ...(fp ? { fingerprint: fp, redactedAtDedup } : {}), dropped: reason };
    } else if (step === 'redact_pii') {
      const findings = detectPii(text);
      if (findings.length) {
        text = redactPii(text, findings);
        redacted = true;
      }
    } else if (step === 'tokenize') tokens = encode!(text);
  }
  return { text, tokens, redacted, ...(fp ? { fingerprint: fp, redactedAtDedup } : {}) };
}
