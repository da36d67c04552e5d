import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startDaemon, tempDir } from '../helpers/daemon.js';

describe('server.tls', () => {
  it('serves HTTPS with a certificate made here, TLS 1.2 at least', async () => {
    const dir = tempDir();
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const d = await startDaemon({ set: [`server.tls.cert_file=${cert}`, `server.tls.key_file=${key}`] });
    try {
      expect(d.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const get = (opts: { maxVersion?: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; minVersion?: 'TLSv1' }) =>
        new Promise<{ status: number; body: string; protocol: string | null }>((resolve, reject) => {
          const req = request(d.url + '/healthz', { ca: readFileSync(cert), agent: false, ...opts }, (res) => {
            const protocol = (res.socket as import('node:tls').TLSSocket).getProtocol();
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode!, body, protocol }));
          });
          req.on('error', reject);
          req.end();
        });
      const ok = await get({});
      expect(ok.status).toBe(200);
      expect(JSON.parse(ok.body)).toEqual({ status: 'ok' });
      expect((await get({ maxVersion: 'TLSv1.2' })).protocol).toBe('TLSv1.2');
      await expect(get({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })).rejects.toThrow();
    } finally {
      await d.stop();
    }
  });

  it('an unreadable certificate stops the start with exit 2 naming server.tls', async () => {
    await expect(startDaemon({ set: ['server.tls.cert_file=/nonexistent/c.pem', 'server.tls.key_file=/nonexistent/k.pem'] })).rejects.toThrow(
      /exited with 2[\s\S]*server\.tls: cannot read \/nonexistent\/c\.pem/,
    );
  });
});
