import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { api, runtimeCommand, startDaemon, tempDir, type Runtime } from '../helpers/daemon.js';

// Smoke tests: the same built daemon under Bun (bun:sqlite) and Deno (node:sqlite) serves a
// write and a read, and a restart keeps the write. Both runtimes come from npm devDependencies,
// so they are always installed by `npm ci`; a missing binary is a failure, not a skip. The
// daemon runs with encryption on, so sealing (node:crypto), the tokenizer and the Parquet
// writer are exercised on each runtime too.

const drivers: Record<Exclude<Runtime, 'node'>, string> = { bun: 'bun:sqlite', deno: 'node:sqlite' };

describe.each(Object.entries(drivers) as Array<[Exclude<Runtime, 'node'>, string]>)('under %s', (runtime, driver) => {
  it('serves a write and a read, and keeps the write across a restart', async () => {
    expect(existsSync(runtimeCommand(runtime)[0]!), `${runtime} binary from npm`).toBe(true);
    const key = join(tempDir('strata-key-'), 'master.key');
    writeFileSync(key, randomBytes(32).toString('base64'));
    const set = ['encryption.enabled=true', `encryption.master_key_file=${key}`];
    const d = await startDaemon({ runtime, set });
    const created = await api(d, 'POST', '/v1/users', { id: 'smoke', email: 'smoke@example.com', tier: 'free' });
    expect(created.status, d.output()).toBe(201);
    await api(d, 'PUT', '/v1/users/smoke/preferences', { lang: 'fr' });
    const conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'smoke' })).body.id;
    expect((await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'bonjour' })).status).toBe(201);
    const h = { authorization: `Bearer ${d.adminToken}` };
    await api(d, 'PUT', '/v1/models/m', {});
    await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' });
    const weights = randomBytes(200_000);
    const up = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { method: 'PUT', headers: { ...h, 'x-content-sha256': createHash('sha256').update(weights).digest('hex') }, body: weights });
    expect(up.status, d.output()).toBe(201);
    const ranged = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { headers: { ...h, range: 'bytes=65530-70000' } });
    expect(Buffer.from(await ranged.arrayBuffer()).equals(weights.subarray(65530, 70001))).toBe(true);
    await api(d, 'POST', '/v1/datasets', { name: 'smoke' });
    await fetch(`${d.url}/v1/datasets/smoke/raw/a.jsonl`, { method: 'PUT', headers: h, body: '{"text":"Hello  world"}\n{"text":"hello world"}\n{"text":"another row"}' });
    const job = (await api(d, 'POST', '/v1/datasets/smoke/jobs', { steps: ['normalize', 'dedup', 'tokenize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 20_000 }).toBe('done');
    expect((await api(d, 'GET', `/v1/jobs/${job}`)).body.stats).toMatchObject({ rows_in: 3, rows_out: 2, duplicates: 1 });
    expect((await api(d, 'GET', '/v1/users/smoke')).body.email).toBe('smoke@example.com');
    // A long text goes to the text worker thread; a "__proto__" key is refused.
    const scan = await api(d, 'POST', '/v1/privacy/scan', { text: 'y'.repeat(100_000) + ' a@b.io' });
    expect(scan.body.findings).toEqual([{ type: 'email', start: 100_001, end: 100_007 }]);
    expect((await api(d, 'PUT', '/v1/users/smoke/preferences', JSON.parse('{"__proto__":{"x":1}}'))).status).toBe(400);
    const status = (await api(d, 'GET', '/v1/admin/status')).body;
    expect(status.storage.sql_driver).toBe(driver);
    expect((await api(d, 'GET', '/v1/admin/audit/verify')).body.ok).toBe(true);
    expect(await d.stop()).toBe(0);

    const again = await startDaemon({ runtime, dataDir: d.dataDir, set });
    try {
      expect((await api(again, 'GET', '/v1/users/smoke/preferences')).body).toEqual({ lang: 'fr' });
      expect((await api(again, 'GET', `/v1/conversations/${conv}/messages`)).body.items[0].content).toBe('bonjour');
    } finally {
      await again.stop();
    }
  });
});

// The HTTP server under the app is each runtime's own (src/daemon/listener.ts). Every feature a
// client meets at the socket is checked on all three.
const servers: Record<Runtime, string> = { node: 'node:http', bun: 'Bun.serve', deno: 'Deno.serve' };

/** One raw HTTP/1.1 exchange: what the server sent back before it closed or went quiet. */
function rawRequest(url: string, head: string, body: string[] = [], gapMs = 0, onSent?: () => void): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, async () => {
      sock.write(head);
      for (const part of body) {
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
        sock.write(part);
        if (part === body[0]) onSent?.();
      }
    });
    let out = '';
    const quiet = setTimeout(() => sock.destroy(), 8_000);
    sock.on('data', (c) => {
      out += c.toString();
      // One complete response is enough (keep-alive would leave the socket open).
      const end = out.indexOf('\r\n\r\n');
      const length = end === -1 ? undefined : /\r\ncontent-length: *(\d+)/i.exec(out.slice(0, end + 2))?.[1];
      if (length !== undefined && Buffer.byteLength(out) >= end + 4 + Number(length)) sock.end();
    });
    sock.on('close', () => {
      clearTimeout(quiet);
      resolve(out);
    });
    sock.on('error', reject);
  });
}

describe.each(['node', 'bun', 'deno'] as Runtime[])('the %s HTTP server', (runtime) => {
  it('listens with the runtime’s own server, limits bodies and headers, checks raw paths, and drains on SIGTERM', async () => {
    const d = await startDaemon({ runtime, set: ['server.max_body_bytes=4096'] });
    try {
      expect((await api(d, 'GET', '/v1/admin/status')).body.http_server).toBe(servers[runtime]);
      // Body limits: a declared length over the limit, and a chunked body that passes it.
      const big = JSON.stringify({ id: 'big', email: 'b@example.com', tier: 'free', x: 'y'.repeat(5000) });
      const declared = await fetch(`${d.url}/v1/users`, { method: 'POST', headers: { authorization: `Bearer ${d.adminToken}`, 'content-type': 'application/json' }, body: big });
      expect(declared.status).toBe(413);
      expect(((await declared.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
      const chunked = await rawRequest(
        d.url,
        `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
        [`${(3000).toString(16)}\r\n${big.slice(0, 3000)}\r\n`, `${(big.length - 3000).toString(16)}\r\n${big.slice(3000)}\r\n0\r\n\r\n`],
      );
      expect(chunked).toMatch(/^HTTP\/1\.1 413/);
      expect((await api(d, 'GET', '/v1/users/big')).status).toBe(404);
      // 431 past 16 KiB of headers.
      const huge = await fetch(`${d.url}/healthz`, { headers: { 'x-padding': 'a'.repeat(20_000) } });
      expect(huge.status).toBe(431);
      // The request line counts towards it (Deno served a 17 KiB URL).
      expect((await fetch(`${d.url}/healthz?pad=${'a'.repeat(17_000)}`)).status).toBe(431);
      // Dot segments in the raw target: refused where the server hands it over as sent; Bun
      // resolves them first, and the request is served as the path it names.
      const dots = await rawRequest(d.url, `GET /v1/users/../../healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      if (runtime === 'bun') expect(dots).toMatch(/^HTTP\/1\.1 200[\s\S]*"status":"ok"/);
      else expect(dots).toMatch(/^HTTP\/1\.1 400[\s\S]*contains .*segments/);
      // Graceful drain: a request whose body is still arriving when SIGTERM lands is answered.
      const body = JSON.stringify({ id: 'late', email: 'late@example.com', tier: 'free' });
      const late = rawRequest(
        d.url,
        `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
        [body.slice(0, 10), body.slice(10)],
        500,
        () => d.proc.kill('SIGTERM'),
      );
      expect(await late).toMatch(/^HTTP\/1\.1 201/);
      expect(await d.stop(), d.output()).toBe(0);
      expect(d.output()).toContain('"msg":"stopped"');
      await expect(fetch(d.url + '/healthz')).rejects.toThrow();
    } finally {
      await d.stop();
    }
    const again = await startDaemon({ runtime, dataDir: d.dataDir });
    try {
      expect((await api(again, 'GET', '/v1/users/late')).status).toBe(200);
    } finally {
      await again.stop();
    }
  });

  it('answers odd requests without a 500 or a new metric series, and exits past the shutdown timeout', async () => {
    const d = await startDaemon({ runtime, set: ['server.shutdown_timeout_seconds=2'] });
    try {
      // HTTP/1.0 without Host: Bun handed the app a relative URL, which became a 500 (review).
      expect(await rawRequest(d.url, 'GET /healthz HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.[01] 200/);
      // A method token the server lets through (Deno does) is "other" in metrics, not a series of its own.
      const brew = await rawRequest(d.url, 'BREW /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      // (Bun closes the connection without an answer; the others answer 4xx.)
      if (runtime === 'bun') expect(brew).toBe('');
      else expect(brew).toMatch(/^HTTP\/1\.1 4\d\d/);
      expect(await (await fetch(d.url + '/metrics')).text()).not.toContain('BREW');
      // A client that hangs up mid-body is not a server error (it fed the 5xx alert rule).
      await new Promise<void>((resolve) => {
        const { hostname, port } = new URL(d.url);
        const sock = connect(Number(port), hostname, () => {
          sock.write(`POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"email":`);
          setTimeout(() => sock.destroy(), 200);
        });
        sock.on('close', () => resolve());
        sock.on('error', () => undefined);
      });
      await expect.poll(() => d.output()).toMatch(/the client closed the connection|"route":"\/v1\/users","status":4/);
      expect(await (await fetch(d.url + '/metrics')).text()).not.toMatch(/route="\/v1\/users",status="5/);
      expect(d.output()).not.toContain('"level":50');
      // A client that stalls its upload past the shutdown timeout does not keep the process alive
      // (Deno's shutdown() waited for it for ever, listening, with the data-dir lock released).
      const stalled = rawRequest(d.url, `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"email":`);
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      d.proc.kill('SIGTERM');
      await d.stop();
      expect(Date.now() - started).toBeLessThan(6_000);
      await stalled;
    } finally {
      await d.stop();
    }
  });

  it('serves HTTPS, TLS 1.2 at least', async () => {
    const dir = tempDir();
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const d = await startDaemon({ runtime, set: [`server.tls.cert_file=${cert}`, `server.tls.key_file=${key}`] });
    try {
      expect(d.url).toMatch(/^https:/);
      const get = (opts: { maxVersion?: 'TLSv1.1' | 'TLSv1.2'; minVersion?: 'TLSv1' }) =>
        new Promise<{ status: number; protocol: string | null }>((resolve, reject) => {
          const req = httpsRequest(d.url + '/healthz', { ca: readFileSync(cert), agent: false, ...opts }, (res) => {
            const protocol = (res.socket as import('node:tls').TLSSocket).getProtocol();
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode!, protocol }));
          });
          req.on('error', reject);
          req.end();
        });
      expect((await get({})).status).toBe(200);
      expect((await get({ maxVersion: 'TLSv1.2' })).protocol).toBe('TLSv1.2');
      await expect(get({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })).rejects.toThrow();
    } finally {
      await d.stop();
    }
  });
});
