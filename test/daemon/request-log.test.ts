import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/daemon/logger.js';
import { RequestLog } from '../../src/daemon/request-log.js';

// The access line is written by hand (not through pino's per-call path), so it must stay what
// pino wrote: one JSON object per line, in the same stream as the other log lines.

function capture(level = 'info') {
  const chunks: string[] = [];
  const log = createLogger(level, { write: (s: string) => void chunks.push(s) });
  return { log, lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('RequestLog', () => {
  it('writes one JSON line per request, batched per event-loop turn and flushed on demand', async () => {
    const { log, lines } = capture();
    const requests = new RequestLog(log);
    requests.write({ reqId: 'r1', method: 'GET', route: '/v1/users/:user_id', status: 200, ms: 0.4, tokenId: 'tok_a' });
    requests.write({ reqId: 'r2', method: 'M"\\X', route: 'unmatched', status: 404, ms: 1.2, tokenId: undefined });
    expect(lines()).toEqual([]); // not yet: once per turn
    await new Promise((r) => setImmediate(r));
    const [a, b] = lines();
    expect(a).toMatchObject({ level: 30, service: 'strata', req_id: 'r1', method: 'GET', route: '/v1/users/:user_id', status: 200, ms: 0.4, token_id: 'tok_a', msg: 'request' });
    expect(typeof a!.time).toBe('string');
    expect(b).toMatchObject({ req_id: 'r2', method: 'M"\\X', status: 404 });
    expect(b).not.toHaveProperty('token_id');
    requests.write({ reqId: 'r3', method: 'GET', route: '/healthz', status: 200, ms: 0.1, tokenId: undefined });
    requests.flush();
    expect(lines().map((l) => l.req_id)).toEqual(['r1', 'r2', 'r3']);
  });

  it('writes nothing below info', async () => {
    const { log, lines } = capture('warn');
    const requests = new RequestLog(log);
    expect(requests.enabled).toBe(false);
    requests.write({ reqId: 'r1', method: 'GET', route: '/healthz', status: 200, ms: 0.1, tokenId: undefined });
    requests.flush();
    await new Promise((r) => setImmediate(r));
    expect(lines()).toEqual([]);
  });
});
