import { INLINE_MAX_CHARS, TextWorker } from '../text-worker.js';
import { detectPii, redactPii, type PiiFinding } from './pii-detector.js';

// detectPii for the daemon: in place for texts of chat length, on a text worker for long ones
// (a 1 MiB message costs tens of milliseconds even though the detector is linear). What one
// request may hand the main thread is bounded too: a batch of texts is judged by its total
// length (a thousand 16 KiB messages scanned in place held the loop for seconds), and a scan
// sends back at most MAX_FINDINGS findings (250k of them took seconds to serialise).

export const MAX_FINDINGS = 10_000;

export interface ScanResult {
  findings: PiiFinding[];
  /** Findings in the text, of which `findings` holds the first MAX_FINDINGS. */
  total: number;
}

export class PiiScanner {
  constructor(private readonly worker = new TextWorker('pii')) {}

  async scan(text: string): Promise<ScanResult> {
    if (text.length <= INLINE_MAX_CHARS) {
      const findings = detectPii(text);
      return { findings: findings.slice(0, MAX_FINDINGS), total: findings.length };
    }
    return this.worker.run<ScanResult>({ op: 'pii', text, maxFindings: MAX_FINDINGS });
  }

  /** The text with every finding replaced by `[TYPE]`, and how many there were. */
  async redact(text: string): Promise<{ text: string; found: number }> {
    if (text.length > INLINE_MAX_CHARS) return this.worker.run<{ text: string; found: number }>({ op: 'pii-redact', text });
    const findings = detectPii(text);
    return { text: findings.length ? redactPii(text, findings) : text, found: findings.length };
  }

  /** The kinds of personal data found in any of `texts`, sorted. */
  async kinds(texts: readonly string[]): Promise<string[]> {
    const total = texts.reduce((n, t) => n + t.length, 0);
    if (total > INLINE_MAX_CHARS) return this.worker.run<string[]>({ op: 'pii-kinds', texts: [...texts] });
    const kinds = new Set<string>();
    for (const t of texts) for (const f of detectPii(t)) kinds.add(f.type);
    return [...kinds].sort();
  }
}
