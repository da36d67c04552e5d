import { isIPv4, isIPv6 } from 'node:net';

// Finds personal data and secrets in free text: emails, phone numbers, credit card numbers
// (Luhn-checked, so order numbers do not count), US social security numbers, IP addresses
// and API-key-like secrets. Offsets are JavaScript string indices (UTF-16 code units),
// end exclusive. Kinds are tried from the most specific to the least, and a span already
// claimed is not reported again (a card number is not also a phone number). The same
// function backs POST /v1/privacy/scan, the conversation tags and redact().

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
  { type: 'email', pattern: /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g },
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
  const taken = (start: number, end: number) => found.some((f) => start < f.end && end > f.start);
  for (const rule of RULES) {
    for (const m of text.matchAll(rule.pattern)) {
      const start = m.index;
      const end = start + m[0].length;
      if (taken(start, end) || (rule.accept && !rule.accept(m[0]))) continue;
      found.push({ type: rule.type, start, end });
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
