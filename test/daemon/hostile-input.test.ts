import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

// Bad input of every kind gets a clear 4xx {error:{code,message}} and changes nothing.

type TestNode = Awaited<ReturnType<typeof openTestNode>>;
let t: TestNode;
let conv: string;

beforeAll(async () => {
  t = await openTestNode(['security.rate_limit.requests_per_second=0']);
  await t.call('POST', '/v1/users', { id: 'u1', email: 'u1@example.com', tier: 'free' });
  conv = (await t.call('POST', '/v1/conversations', { user_id: 'u1' })).body.id;
  await t.call('POST', '/v1/collections', { name: 'c', dimensions: 3, metric: 'cos' });
});
afterAll(() => t.close());

async function send(method: string, path: string, body: string | Uint8Array) {
  const res = await t.app.request(path, { method, headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/json' }, body });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as { error?: { code: string; message: string } }) : null };
}

const positions = () => ({ main: t.node.sql.writer.lastLsn, billing: t.node.billingSql.writer.lastLsn });

describe('hostile input', () => {
  it('invalid UTF-8, deep nesting, huge arrays, wrong types and oversized bodies get a clear 4xx', async () => {
    const before = positions();
    const cases: Array<[string, string, string | Uint8Array, number, string]> = [
      ['POST', '/v1/users', Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 400, 'not valid UTF-8'],
      ['PUT', '/v1/users/u1/preferences', '['.repeat(10_000) + ']'.repeat(10_000), 400, 'nested deeper than 64'],
      ['PUT', '/v1/users/u1/preferences', `{"a":${'{"a":'.repeat(100)}1${'}'.repeat(100)}}`, 400, 'nested deeper'],
      ['POST', `/v1/collections/c/upsert`, JSON.stringify({ vectors: Array.from({ length: 5000 }, (_, i) => ({ id: `v${i}`, values: [1, 2, 3] })) }), 400, 'at most'],
      ['POST', '/v1/users', JSON.stringify({ id: 'x', email: 42, tier: 'free' }), 400, 'email'],
      ['POST', '/v1/usage', JSON.stringify({ user_id: 'u1', model: 'm', input_tokens: '10', output_tokens: 1 }), 400, 'input_tokens'],
      ['POST', `/v1/conversations/${conv}/messages`, 'x'.repeat(17 * 1024 * 1024), 413, 'larger than the limit'],
      ['POST', '/v1/users', '{"id": "x", ', 400, 'not valid JSON'],
    ];
    for (const [method, path, body, status, message] of cases) {
      const r = await send(method, path, body);
      expect(r.status, `${method} ${path}`).toBe(status);
      expect(r.body?.error?.message, `${method} ${path}`).toContain(message);
    }
    expect(positions()).toEqual(before);
  });

  it('a "__proto__" key is refused with 400 wherever it appears, in any spelling, never silently dropped', async () => {
    await t.call('POST', '/v1/collections/c/upsert', { vectors: [{ id: 'a', values: [1, 0, 0], metadata: { tag: 'x' } }, { id: 'b', values: [0, 1, 0], metadata: { tag: 'y' } }] });
    const before = positions();
    const cases: Array<[string, string, string]> = [
      // 0.7.0 dropped the key from the filter and answered every vector: a filter that widened.
      ['POST', '/v1/collections/c/query', '{"vector":[1,0,0],"top_k":5,"filter":{"__proto__":"nomatch"}}'],
      ['POST', '/v1/collections/c/query', '{"vector":[1,0,0],"top_k":5,"filter":{"tag":"x","\\u005f_proto__":"nomatch"}}'],
      ['POST', '/v1/collections/c/upsert', '{"vectors":[{"id":"p","values":[1,1,0],"metadata":{"__proto__":{"admin":true}}}]}'],
      ['PUT', '/v1/users/u1/preferences', '{"theme":"dark","__proto__":{"polluted":1}}'],
      ['PUT', '/v1/users/u1/preferences', '{"nested":{"list":[{"__pr\\u006fto__":1}]}}'],
      ['POST', '/v1/graph/entities', '{"entities":[{"id":"e","type":"t","name":"n","props":{"__proto__":1}}]}'],
    ];
    for (const [method, path, body] of cases) {
      const r = await send(method, path, body);
      expect(r.status, body).toBe(400);
      expect(r.body?.error?.message, body).toMatch(/the key "__proto__" is not allowed \(at body/);
    }
    // MessagePack bodies: msgpackr would have renamed the key to "__proto_".
    const { pack } = await import('msgpackr');
    const mp = await t.app.request('/v1/collections/c/query', {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/msgpack' },
      body: Buffer.concat([Buffer.from([0x83]), pack('vector').subarray(0), pack([1, 0, 0]), pack('top_k'), pack(5), pack('filter'), Buffer.from([0x81]), pack('__proto__'), pack('nomatch')]),
    });
    expect(mp.status).toBe(400);
    expect(positions()).toEqual(before);
    // The name as data, and keys such as "constructor", are ordinary and kept.
    expect((await t.call('PUT', '/v1/users/u1/preferences', { note: 'about __proto__', constructor: 'kept' })).status).toBe(200);
    expect((await t.call('GET', '/v1/users/u1/preferences')).body).toEqual({ note: 'about __proto__', constructor: 'kept' });
    expect((await t.call('POST', '/v1/collections/c/query', { vector: [1, 0, 0], top_k: 5, filter: { tag: 'x' } })).body.matches.map((m: { id: string }) => m.id)).toEqual(['a']);
  });

  it('lone surrogates, numbers too large for a double and deep MessagePack are refused, never silently changed', async () => {
    const before = positions();
    const cases: Array<[string, string, string, RegExp]> = [
      // 0.7.0 answered 201 and stored "x\ufffd\ufffd\ufffdy"; 1e400 was stored as null.
      ['POST', `/v1/conversations/${conv}/messages`, '{"role":"user","content":"x\\ud800y"}', /at body.content holds a lone UTF-16 surrogate/],
      ['PUT', '/v1/users/u1/preferences', '{"k\\udc00":1}', /lone UTF-16 surrogate/],
      ['PUT', '/v1/users/u1/preferences', '{"x":1e400}', /the number at body.x is too large/],
      ['PUT', '/v1/users/u1/preferences', `{"x":${'9'.repeat(400)}}`, /too large for a 64-bit float/],
      ['POST', '/v1/collections/c/upsert', '{"vectors":[{"id":"z","values":[1,0,0],"metadata":{"n":-1E+999}}]}', /too large/],
    ];
    for (const [method, path, body, message] of cases) {
      const r = await send(method, path, body);
      expect(r.status, body).toBe(400);
      expect(r.body?.error?.message, body).toMatch(message);
    }
    const { pack } = await import('msgpackr');
    let deep: unknown = 1;
    for (let i = 0; i < 500; i++) deep = { d: deep };
    const mp = await t.app.request('/v1/collections/c/upsert', {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/msgpack' },
      body: pack({ vectors: [{ id: 'deep', values: [1, 0, 0], metadata: deep }] }),
    });
    expect(mp.status).toBe(400);
    expect(((await mp.json()) as { error: { message: string } }).error.message).toMatch(/nested deeper than 64/);
    expect(positions()).toEqual(before);
    // Well-formed pairs, ordinary numbers and ordinary escapes are data as usual.
    expect((await send('PUT', '/v1/users/u1/preferences', '{"emoji":"\\ud83d\\ude00","big":1e300,"tab":"a\\tb"}')).status).toBe(200);
    expect((await t.call('GET', '/v1/users/u1/preferences')).body).toEqual({ emoji: '😀', big: 1e300, tab: 'a\tb' });
  });

  it('fuzz: generated bad bodies on every JSON endpoint get 4xx and change nothing', async () => {
    const endpoints: Array<[string, string, boolean]> = [
      // [method, path, body is a free-form object (preferences)]
      ['POST', '/v1/users', false],
      ['PATCH', '/v1/users/u1', false],
      ['PUT', '/v1/users/u1/preferences', true],
      ['POST', '/v1/conversations', false],
      ['POST', `/v1/conversations/${conv}/messages`, false],
      ['POST', '/v1/usage', false],
      ['POST', '/v1/billing/entries', false],
      ['POST', '/v1/collections', false],
      ['POST', '/v1/collections/c/upsert', false],
      ['POST', '/v1/collections/c/query', false],
      ['POST', '/v1/graph/entities', false],
      ['POST', '/v1/privacy/scan', false],
      ['POST', '/v1/admin/tokens', false],
    ];
    const notAnObject = fc.oneof(fc.array(fc.jsonValue(), { maxLength: 5 }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string(), fc.boolean(), fc.constant(null)).map((v) => JSON.stringify(v));
    const unknownKey = fc.tuple(fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }), fc.string({ minLength: 1, maxLength: 8 })).map(([o, k]) => JSON.stringify({ ...o, [`__fuzz_${k}`]: 1 }));
    const broken = fc
      .tuple(fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify({ v })), fc.nat())
      .map(([s, n]) => s.slice(0, n % s.length))
      .filter((s) => {
        try {
          JSON.parse(s);
          return false;
        } catch {
          return true;
        }
      });
    const badUtf8 = fc.uint8Array({ minLength: 1, maxLength: 8 }).map((b) => Buffer.concat([Buffer.from('{"text":"'), Buffer.from([0xc3, 0x28]), Buffer.from(b), Buffer.from('"}')]));
    const deep = fc.integer({ min: 65, max: 3000 }).map((n) => '['.repeat(n) + ']'.repeat(n));
    const protoKey = fc
      .tuple(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom('__proto__', '\\u005f_proto__', '__prot\\u006f__', '\\u005F\\u005Fproto__'))
      .map(([v, key]) => `{"${key}":${JSON.stringify(v)}}`);
    const before = positions();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...endpoints), fc.oneof(notAnObject, unknownKey, broken, badUtf8, deep, protoKey), async ([method, path, freeForm], body) => {
        if (freeForm && typeof body === 'string' && body.startsWith('{"') && body.includes('__fuzz_')) return; // a valid preferences object
        const r = await send(method, path, body);
        expect(r.status, `${method} ${path} ${String(body).slice(0, 80)}`).toBeGreaterThanOrEqual(400);
        expect(r.status).toBeLessThan(500);
        expect(typeof r.body?.error?.code).toBe('string');
        expect(typeof r.body?.error?.message).toBe('string');
      }),
      { numRuns: 400, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    expect(positions()).toEqual(before);
    expect((await t.call('GET', '/v1/users/u1')).body.email).toBe('u1@example.com');
  });
});

describe('tokens, rate limits and logs', () => {
  it('limits each token to its burst, then 429 with Retry-After; another token is unaffected', async () => {
    const n = await openTestNode(['security.rate_limit.requests_per_second=0.1', 'security.rate_limit.burst=5']);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push((await n.call('GET', '/v1/users/nobody')).status);
      expect(statuses.slice(0, 5)).toEqual([404, 404, 404, 404, 404]);
      expect(statuses.slice(5)).toEqual([429, 429, 429]);
      const limited = await n.app.request('/v1/users/nobody', { headers: { authorization: `Bearer ${n.adminToken}` } });
      // One request back every 10 s: Retry-After says how long until the next.
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(10);
      expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
      const other = (await n.call('POST', '/v1/admin/tokens', { role: 'reader', name: 'r' })).status;
      expect(other).toBe(429); // the admin token is still out of requests
    } finally {
      await n.close();
    }
  });

  it('failed authentication is counted and audited without the token; no token or content reaches the log', async () => {
    const d = await startDaemon();
    try {
      const secretToken = 'stk_not_a_real_token_0123456789abcdef';
      for (let i = 0; i < 3; i++) expect((await api(d, 'GET', '/v1/users/x', undefined, secretToken)).status).toBe(401);
      expect((await api(d, 'GET', '/v1/users/x', undefined, null)).status).toBe(401);
      const metrics = await (await fetch(`${d.url}/metrics`)).text();
      expect(metrics).toMatch(/strata_auth_failures_total\{[^}]*reason="invalid"[^}]*\} 3/);
      expect(metrics).toMatch(/strata_auth_failures_total\{[^}]*reason="missing"[^}]*\} 1/);
      await api(d, 'POST', '/v1/users', { id: 'u', email: 'content-marker@example.com', tier: 'free' });
      const conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'u' })).body.id;
      await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'CONTENT-MARKER-in-a-message' });
      await expect
        .poll(async () => (await api(d, 'GET', '/v1/admin/audit?limit=20')).body.items.find((e: { action: string }) => e.action === 'auth.failed'), { timeout: 5000 })
        .toMatchObject({ action: 'auth.failed', detail: { invalid: 3, missing: 1 } });
      const audit = JSON.stringify((await api(d, 'GET', '/v1/admin/audit?limit=50')).body);
      expect(audit).not.toContain(secretToken);
      // Oversized headers and traversal attempts on the raw socket: refused, and the daemon stays up.
      const { port, hostname } = new URL(d.url);
      const raw = (request: string) =>
        new Promise<string>((resolve) => {
          const sock = connect(Number(port), hostname, () => sock.end(request));
          let got = '';
          sock.on('data', (c) => (got += c.toString()));
          sock.on('close', () => resolve(got));
          sock.on('error', () => resolve(got));
        });
      expect(await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431/);
      for (const path of ['/v1/models/m/versions/v1/files/../../../etc/passwd', '/v1/users/%2e%2e/preferences', '/v1/../admin/status']) {
        const got = await raw(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nConnection: close\r\n\r\n`);
        expect(got, path).toMatch(/^HTTP\/1\.1 400/);
        expect(got).toContain('"code":"invalid_input"');
      }
      expect((await fetch(`${d.url}/healthz`)).status).toBe(200);
      const log = d.output();
      expect(log).toContain('"status":401');
      for (const secret of [secretToken, d.adminToken, 'CONTENT-MARKER', 'content-marker@example.com']) expect(log).not.toContain(secret);
    } finally {
      await d.stop();
    }
  });
});
