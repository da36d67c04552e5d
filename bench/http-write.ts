import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { closedLoop, row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags } from './lib.js';

// http_write: authenticated JSON writes (POST /v1/users: validation, token check, change log,
// audit entry, group commit) against a bare node:http server doing one better-sqlite3 insert
// per request. Both are durable at acknowledgement (WAL + synchronous=FULL).

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const PEER = join(here, 'peers/sqlite-http-server.js');

export async function httpWrite(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 4 : 15;
  const concurrency = 64;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-'));
  try {
    // Default log level (info: one JSON line per request), as a user would run it.
    const strata = await spawnUntil(
      process.execPath,
      [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'strata')}`],
      /"url":"(http:\/\/[^"]+)"/,
    );
    const token = readFileSync(join(dir, 'strata', 'admin.token'), 'utf8').trim();
    const s = await closedLoop(strata.match, concurrency, seconds, (i) => ({
      method: 'POST',
      path: '/v1/users',
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({ id: `user-${i}`, email: `user-${i}@example.com`, tier: 'free' }),
    }));
    await stop(strata.proc);

    const peer = await spawnUntil(process.execPath, [PEER, join(dir, 'peer.db')], /listening (http:\/\/\S+)/);
    const p = await closedLoop(peer.match, concurrency, seconds, (i) => ({
      method: 'POST',
      path: '/users',
      body: JSON.stringify({ id: `user-${i}`, email: `user-${i}@example.com`, tier: 'free' }),
    }));
    await stop(peer.proc);

    if (s.errors || p.errors) throw new Error(`http_write saw errors: strata ${s.errors}, peer ${p.errors}`);
    const notes = `${concurrency} keep-alive clients, ${seconds}s each`;
    return [
      row({ name: 'http_write', metric: 'throughput', unit: 'writes/s', value: round(s.perSecond), peer: 'node:http + better-sqlite3 insert per request', peer_value: round(p.perSecond), better: 'higher', notes }),
      row({ name: 'http_write', metric: 'p99 latency', unit: 'ms', value: round(s.p99ms), peer: 'node:http + better-sqlite3 insert per request', peer_value: round(p.p99ms), better: 'lower', notes }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
