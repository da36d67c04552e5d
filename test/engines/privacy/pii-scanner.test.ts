import { afterAll, describe, expect, it } from 'vitest';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { detectPii } from '../../../src/engines/privacy/pii-detector.js';
import { PiiScanner } from '../../../src/engines/privacy/pii-scanner.js';
import { INLINE_MAX_CHARS, TextWorker } from '../../../src/engines/text-worker.js';

describe('PiiScanner', () => {
  const worker = new TextWorker();
  const scanner = new PiiScanner(worker);
  afterAll(() => worker.close());

  it('scans short texts in place and long ones on the text worker, with the same findings', async () => {
    const short = 'mail a@b.io or call 212-555-0199';
    expect(await scanner.scan(short)).toEqual(detectPii(short));
    expect(worker.jobs).toBe(0);
    const long = 'x'.repeat(INLINE_MAX_CHARS) + ' card 4111 1111 1111 1111, ssn 123-45-6789, ' + 'y@z.org '.repeat(5000);
    const found = await scanner.scan(long);
    expect(worker.jobs).toBe(1);
    expect(found).toEqual(detectPii(long));
    expect(await scanner.kinds([short, long])).toEqual(['credit_card', 'email', 'phone', 'ssn']);
  });

  it('keeps the event loop free while megabytes of hostile text are scanned', async () => {
    const texts = Array.from({ length: 8 }, (_, i) => (i % 2 ? 'a.' : 'y').repeat(512 * 1024));
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    await Promise.all(texts.map((t) => scanner.scan(t)));
    delay.disable();
    // Scanned here, 8 MiB would hold the loop for the whole scan; on the worker the loop only
    // copies strings. The bound is loose on purpose: it separates "free" from "held".
    expect(delay.max / 1e6).toBeLessThan(250);
  });
});
