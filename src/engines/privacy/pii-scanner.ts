import { INLINE_MAX_CHARS, TextWorker } from '../text-worker.js';
import { detectPii, type PiiFinding } from './pii-detector.js';

// detectPii for the daemon: in place for texts of chat length, on the text worker for long
// ones (a 1 MiB message costs tens of milliseconds even though the detector is linear, and one
// request may carry a thousand of them).

export class PiiScanner {
  constructor(private readonly worker = new TextWorker()) {}

  scan(text: string): Promise<PiiFinding[]> {
    if (text.length <= INLINE_MAX_CHARS) return Promise.resolve(detectPii(text));
    return this.worker.run<PiiFinding[]>({ op: 'pii', text });
  }

  /** The kinds of personal data found in any of `texts`, sorted. */
  async kinds(texts: readonly string[]): Promise<string[]> {
    const kinds = new Set<string>();
    for (const t of texts) for (const f of await this.scan(t)) kinds.add(f.type);
    return [...kinds].sort();
  }
}
