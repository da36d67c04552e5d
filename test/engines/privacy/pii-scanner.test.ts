import { afterAll, describe, expect, it } from 'vitest';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { detectPii, redactPii } from '../../../src/engines/privacy/pii-detector.js';
import { MAX_FINDINGS, PiiScanner } from '../../../src/engines/privacy/pii-scanner.js';
import { INLINE_MAX_CHARS, TextWorker } from '../../../src/engines/text-worker.js';

describe('PiiScanner', () => {
  const worker = new TextWorker('test', 16 * 1024 * 1024);
  const scanner = new PiiScanner(worker);
  afterAll(() => worker.close());

  it('scans short texts in place and long ones on the text worker, with the same findings', async () => {
    const short = 'mail a@b.io or call 212-555-0199';
    expect((await scanner.scan(short)).findings).toEqual(detectPii(short));
    expect(worker.jobs).toBe(0);
    const long = 'x'.repeat(INLINE_MAX_CHARS) + ' card 4111 1111 1111 1111, ssn 123-45-6789, ' + 'y@z.org '.repeat(5000);
    const found = await scanner.scan(long);
    expect(worker.jobs).toBe(1);
    expect(found).toEqual({ findings: detectPii(long), total: detectPii(long).length });
    expect(await scanner.kinds([short, long])).toEqual(['credit_card', 'email', 'phone', 'ssn']);
    expect(await scanner.redact(long)).toEqual({ text: redactPii(long), found: detectPii(long).length });
  });

  it('returns at most MAX_FINDINGS findings, with the total', async () => {
    const r = await scanner.scan('1.'.repeat(500_000));
    expect(r.findings).toHaveLength(MAX_FINDINGS);
    expect(r.total).toBeGreaterThan(MAX_FINDINGS);
  });

  it('judges a batch by its total length: a thousand short texts go to the worker as one job', async () => {
    const before = worker.jobs;
    const texts = Array.from({ length: 1000 }, () => '12 '.repeat(5461));
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    expect(await scanner.kinds(texts)).toEqual(['phone']);
    delay.disable();
    expect(worker.jobs).toBe(before + 1);
    // In place, this batch held the loop for seconds in review; here only the copy to the worker.
    expect(delay.max / 1e6).toBeLessThan(1000);
  });

  it('refuses a job with 503 when its queue is over budget, instead of queueing without bound', async () => {
    const flood = Array.from({ length: 40 }, () => scanner.scan('y'.repeat(1024 * 1024)).then(() => 'ok', (err: Error) => err.message));
    const outcomes = await Promise.all(flood);
    expect(outcomes.filter((o) => o === 'ok').length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o !== 'ok')[0]).toMatch(/Mi characters queued; retry in a moment/);
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
