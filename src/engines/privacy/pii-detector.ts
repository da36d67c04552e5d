import { isIPv4, isIPv6 } from 'node:net';

// Finds personal data and secrets in free text: emails, phone numbers, credit card numbers
// (Luhn-checked, so order numbers do not count), US social security numbers, IP addresses
// and API-key-like secrets. Offsets are JavaScript string indices (UTF-16 code units),
// end exclusive. Kinds are tried from the most specific to the least, and a span already
// claimed is not reported again (a card number is not also a phone number). The same
// function backs POST /v1/privacy/scan, the conversation tags and redact().
//
// Cost is linear in the text, whatever the text (clients choose it, up to 1 MiB a message):
// - Emails are found by hand from each '@' outwards. The obvious regex,
//   /[local]+@[domain]…/ without an anchor, restarts at every letter of a long run that
//   holds no '@' and rescans the run: quadratic (0.7.0 spent 6 s on 80k letters).
// - Every remaining pattern either starts at a word boundary or a lookbehind that only the
//   first character of a run passes, or matches a bounded length; a match is consumed even
//   when `accept` then rejects it, so no run is rescanned.
// - Overlap with earlier findings is checked against a claim map, not by scanning the list
//   of findings (which was quadratic in the number of findings).
// test/engines/privacy/pii-detector.test.ts proves it: 1 MiB of each adversarial shape costs
// about 16 times what 64 KiB does.

export type PiiType = 'email' | 'phone' | 'credit_card' | 'ssn' | 'ip' | 'api_key';

export interface PiiFinding {
  type: PiiType;
  start: number;
  end: number;
}

interface Rule {
  type: PiiType;
  pattern: RegExp;
  accept?(match: string): boolean;
}

const RULES: Rule[] = [
  {
    type: 'api_key',
    pattern:
      /\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})/g,
  },
  // Long random-looking tokens (hex or base64url) with letters and digits mixed: secrets more often than not.
  { type: 'api_key', pattern: /\b[A-Za-z0-9_\-+/]{32,}={0,2}/g, accept: looksRandom },
  { type: 'credit_card', pattern: /\b\d(?:[ -]?\d){12,18}\b/g, accept: (m) => luhn(m.replace(/\D/g, '')) },
  { type: 'ssn', pattern: /\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b/g },
  { type: 'ip', pattern: /\b(?:\d{1,3}\.){3}\d{1,3}\b/g, accept: isIPv4 },
  { type: 'ip', pattern: /(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])/g, accept: (m) => m.length > 2 && isIPv6(m) },
  {
    type: 'phone',
    pattern: /(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]\d{2,4}(?:[ .-]\d{2,4}){0,2}(?!\w)/g,
    accept: (m) => {
      const digits = m.replace(/\D/g, '').length;
      return digits >= 7 && digits <= 15;
    },
  },
];

export function detectPii(text: string): PiiFinding[] {
  const found: PiiFinding[] = [];
  // One byte per code unit: 1 where an earlier finding already covers the text.
  const claimed = new Uint8Array(text.length);
  const claim = (type: PiiType, start: number, end: number) => {
    found.push({ type, start, end });
    claimed.fill(1, start, end);
  };
  findEmails(text, (start, end) => claim('email', start, end));
  for (const rule of RULES) {
    for (const m of text.matchAll(rule.pattern)) {
      const start = m.index;
      const end = start + m[0].length;
      // Matches of one rule never overlap each other, so these scans add up to the text's length.
      if (claimed.subarray(start, end).includes(1)) continue;
      if (rule.accept && !rule.accept(m[0])) continue;
      claim(rule.type, start, end);
    }
  }
  return found.sort((a, b) => a.start - b.start);
}

/** The text with every finding replaced by `[TYPE]`, e.g. "[EMAIL]". */
export function redactPii(text: string, findings = detectPii(text)): string {
  let out = '';
  let at = 0;
  for (const f of findings) {
    out += text.slice(at, f.start) + `[${f.type.toUpperCase()}]`;
    at = f.end;
  }
  return out + text.slice(at);
}

// local@label(.label)*.tld — local [A-Za-z0-9._%+-]+, label [A-Za-z0-9-]+, tld [A-Za-z]{2,}
// (the tld may be the alphabetic start of a longer label, as the regex this replaces allowed).
// The longest such domain wins. Neither class holds '@', so the scan left of one '@' stops at
// the previous one and the scan right of it at the next: each character is visited at most
// twice.
function findEmails(text: string, found: (start: number, end: number) => void): void {
  let floor = 0;
  for (let at = text.indexOf('@'); at !== -1; ) {
    let start = at;
    while (start > floor && isLocal(text.charCodeAt(start - 1))) start--;
    const end = start < at ? domainEnd(text, at + 1) : -1;
    if (end === -1) {
      at = text.indexOf('@', at + 1);
      continue;
    }
    found(start, end);
    floor = end;
    at = text.indexOf('@', end);
  }
}

/** End (exclusive) of the longest valid domain starting at `i`, or -1. */
function domainEnd(text: string, i: number): number {
  let best = -1;
  let labels = 0;
  for (let j = i; ; ) {
    const labelStart = j;
    while (j < text.length && isLabel(text.charCodeAt(j))) j++;
    if (j === labelStart) return best;
    if (++labels >= 2) {
      let k = labelStart;
      while (k < j && isAlpha(text.charCodeAt(k))) k++;
      if (k - labelStart >= 2) best = k;
    }
    if (text.charCodeAt(j) !== 46 /* . */) return best;
    j++;
  }
}

function isAlpha(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isLabel(c: number): boolean {
  return isAlpha(c) || (c >= 48 && c <= 57) || c === 45; /* - */
}

function isLocal(c: number): boolean {
  return isLabel(c) || c === 46 /* . */ || c === 95 /* _ */ || c === 37 /* % */ || c === 43; /* + */
}

function luhn(digits: string): boolean {
  if (digits.length < 13 || digits.length > 19) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

function looksRandom(token: string): boolean {
  if (!/[0-9]/.test(token) || !/[A-Za-z]/.test(token)) return false;
  const counts = new Map<string, number>();
  for (const ch of token) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  let entropy = 0;
  for (const n of counts.values()) {
    const p = n / token.length;
    entropy -= p * Math.log2(p);
  }
  return entropy >= 3.5;
}
