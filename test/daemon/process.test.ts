import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';

// The daemon as a real process over real HTTP.

function rawRequest(url: string, head: string, body?: string, waitMs = 5000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => {
      sock.write(head);
      if (body) sock.write(body);
    });
    let out = '';
    sock.on('data', (d) => {
      out += d.toString();
      if (/\r\n\r\n/.test(out) && /\}\s*$/.test(out)) sock.destroy();
    });
    sock.on('close', () => resolve(out));
    sock.on('error', reject);
    setTimeout(() => {
      sock.destroy();
      resolve(out);
    }, waitMs);
  });
}

describe('daemon over HTTP', () => {
  let d: Daemon;
  beforeAll(async () => {
    d = await startDaemon({ set: ['server.max_body_bytes=1024'] });
  });
  afterAll(async () => {
    await d.stop();
  });

  it('answers unknown routes, bad JSON and oversized bodies with the error shape', async () => {
    const missing = await api(d, 'GET', '/v1/nothing-here');
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ error: { code: 'not_found', message: 'no route for GET /v1/nothing-here' } });
    expect(missing.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    const res = await fetch(d.url + '/v1/users', {
      method: 'POST',
      headers: { authorization: `Bearer ${d.adminToken}`, 'content-type': 'application/json', 'x-request-id': 'trace-42' },
      body: '{"email": "a@b.c", ',
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-request-id')).toBe('trace-42');
    const bad = (await res.json()) as { error: { code: string; message: string } };
    expect(bad.error.code).toBe('invalid_input');
    expect(bad.error.message).toMatch(/not valid JSON/);

    const big = await api(d, 'POST', '/v1/users', { email: 'a@example.com', tier: 'free', pad: 'x'.repeat(2000) });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('payload_too_large');
  });

  it('refuses a declared oversized body with 413 before reading it', async () => {
    // Declares 1 GB and sends none of it: the answer must come anyway.
    const started = Date.now();
    const out = await rawRequest(
      d.url,
      `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n`,
    );
    expect(out).toMatch(/^HTTP\/1\.1 413/);
    expect(out).toContain('"code":"payload_too_large"');
    expect(Date.now() - started).toBeLessThan(4000);
  });

  it('cuts off a chunked body at the limit', async () => {
    const chunk = 'x'.repeat(800);
    const body = `${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(3) + '0\r\n\r\n';
    const out = await rawRequest(
      d.url,
      `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
      body,
    );
    expect(out).toMatch(/^HTTP\/1\.1 413/);
  });

  it('serves /healthz, /readyz, /metrics and /openapi.json without a token', async () => {
    expect((await api(d, 'GET', '/healthz', undefined, null)).body).toEqual({ status: 'ok' });
    expect((await api(d, 'GET', '/readyz', undefined, null)).status).toBe(200);
    const metrics = await fetch(d.url + '/metrics');
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await metrics.text();
    expect(text).toMatch(/strata_build_info\{version="[^"]+",runtime="node"/);
    expect(text).toContain('strata_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/healthz",status="200"}');
    expect(text).toContain('route="/v1/users",status="413"');
    expect(text).toMatch(/strata_changelog_lsn \d+/);
    expect(text).toContain('strata_sql_transaction_duration_seconds_bucket');
    expect(text).toContain('process_resident_memory_bytes');
    const doc = (await api(d, 'GET', '/openapi.json', undefined, null)).body;
    expect(doc.openapi).toBe('3.1.0');
    const create = doc.paths['/v1/users'].post;
    expect(create.requestBody.content['application/json'].schema.required).toEqual(['email', 'tier']);
    expect(doc.paths['/v1/users/{user_id}/preferences'].put).toBeDefined();
    expect(doc.paths['/v1/admin/tokens'].post.requestBody.content['application/json'].schema.properties.role.enum).toEqual([
      'admin',
      'service',
      'reader',
      'user',
    ]);
  });

  it('logs one JSON line per request without the token or the body', async () => {
    await api(d, 'PUT', '/v1/users/nobody/preferences', { secret_marker: 'PLEASE-DO-NOT-LOG' });
    await new Promise((r) => setTimeout(r, 200));
    const lines = d.output().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const request = lines.filter((l) => l.msg === 'request');
    expect(request.length).toBeGreaterThan(5);
    expect(request.at(-1)).toMatchObject({ method: 'PUT', route: '/v1/users/:user_id/preferences', status: 404 });
    expect(d.output()).not.toContain(d.adminToken);
    expect(d.output()).not.toContain('PLEASE-DO-NOT-LOG');
  });
});

describe('durability and shutdown', () => {
  it('an acknowledged write survives kill -9', async () => {
    const first = await startDaemon();
    const acked: string[] = [];
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const r = await api(first, 'POST', '/v1/users', { id: `k${i}`, email: `k${i}@example.com`, tier: 'free' });
        if (r.status === 201) acked.push(`k${i}`);
      }),
    );
    expect(acked).toHaveLength(50);
    await first.kill9();
    expect(first.proc.signalCode).toBe('SIGKILL');

    const second = await startDaemon({ dataDir: first.dataDir });
    try {
      for (const id of acked) expect((await api(second, 'GET', `/v1/users/${id}`)).status, id).toBe(200);
      expect((await api(second, 'GET', '/v1/admin/audit/verify')).body).toMatchObject({ ok: true, entries: 51 });
      // The pid file the killed daemon left behind did not block the restart.
    } finally {
      await second.stop();
    }
  });

  it('SIGTERM lets an in-flight request finish, then exits 0 and refuses new connections', async () => {
    const d = await startDaemon();
    const { hostname, port } = new URL(d.url);
    const body = JSON.stringify({ id: 'late', email: 'late@example.com', tier: 'free' });
    // A request whose body is still arriving when the signal lands.
    const response = new Promise<string>((resolve, reject) => {
      const sock = connect(Number(port), hostname, () => {
        sock.write(
          `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
        );
        sock.write(body.slice(0, 10));
        setTimeout(() => {
          d.proc.kill('SIGTERM');
          setTimeout(() => sock.write(body.slice(10)), 700);
        }, 300);
      });
      let out = '';
      sock.on('data', (c) => (out += c.toString()));
      sock.on('close', () => resolve(out));
      sock.on('error', reject);
    });
    const out = await response;
    expect(out).toMatch(/^HTTP\/1\.1 201/);
    expect(out).toMatch(/connection: close/i);
    expect(await d.stop(), d.output()).toBe(0);
    await expect(fetch(d.url + '/healthz')).rejects.toThrow();
    expect(d.output()).toContain('"msg":"stopped"');

    const again = await startDaemon({ dataDir: d.dataDir });
    try {
      expect((await api(again, 'GET', '/v1/users/late')).status).toBe(200);
    } finally {
      await again.stop();
    }
  });

  it('a second daemon on the same data dir exits 1 with a clear message', async () => {
    const d = await startDaemon();
    try {
      await expect(startDaemon({ dataDir: d.dataDir })).rejects.toThrow(/in use by another strata process/);
    } finally {
      await d.stop();
    }
  });

  it('a pid file naming a live process that is not strata (pid reuse) does not block the start; scratch files a crash left are swept', async () => {
    const dataDir = tempDir();
    const other = spawn('sleep', ['300']);
    try {
      writeFileSync(join(dataDir, 'strata.pid'), `${other.pid}\n`);
      mkdirSync(join(dataDir, '.backup-abc123'));
      writeFileSync(join(dataDir, '.backup-abc123', 'main.db'), Buffer.alloc(1000));
      mkdirSync(join(dataDir, '.tmp'));
      writeFileSync(join(dataDir, '.tmp', 'dedup-job1.db'), Buffer.alloc(1000));
      const d = await startDaemon({ dataDir });
      expect(existsSync(join(dataDir, '.backup-abc123'))).toBe(false);
      expect(existsSync(join(dataDir, '.tmp', 'dedup-job1.db'))).toBe(false);
      expect(Number(readFileSync(join(dataDir, 'strata.pid'), 'utf8'))).toBe(d.proc.pid);
      expect(await d.stop()).toBe(0);
      // The file stays (rewritten in place, so a full disk cannot stop the next start), naming nobody.
      expect(Number(readFileSync(join(dataDir, 'strata.pid'), 'utf8'))).toBe(0);
      const again = await startDaemon({ dataDir });
      expect(await again.stop()).toBe(0);
    } finally {
      other.kill();
    }
  });
});
