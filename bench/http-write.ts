import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags } from './lib.js';
import { alternate, wrk } from './load.js';

// http_write: authenticated JSON writes (POST /v1/users: validation, token check, change log,
// audit entry, group commit) against a bare node:http server doing one better-sqlite3 insert
// per request. Both are durable at acknowledgement (WAL + synchronous=FULL).

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const PEER = join(here, 'peers/sqlite-http-server.js');

export async function httpWrite(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 2 : 5;
  const rounds = opts.quick ? 2 : 3;
  const concurrency = 64;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-'));
  try {
    // Default log level (info: one JSON line per request), as a user would run it. Both up at
    // once, measured alternately with wrk (each request a new user id).
    const strata = await spawnUntil(
      process.execPath,
      [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'strata')}`],
      /"url":"(http:\/\/[^"]+)"/,
    );
    const token = readFileSync(join(dir, 'strata', 'admin.token'), 'utf8').trim();
    const peer = await spawnUntil(process.execPath, [PEER, join(dir, 'peer.db')], /listening (http:\/\/\S+)/);
    // wrk cycles through these; a round that wraps around meets ids already taken (409 for
    // Strata, a constraint error for the peer), so each round gets its own range.
    let wave = 0;
    const users = (path: string) => {
      const base = wave++ * 1_000_000;
      const bodies = Array.from({ length: seconds * 15_000 }, (_, i) => JSON.stringify({ id: `user-${base + i}`, email: `user-${base + i}@example.com`, tier: 'free' }));
      return { method: 'POST' as const, paths: bodies.map(() => path), bodies, headers: (path === '/v1/users' ? { authorization: `Bearer ${token}` } : {}) as Record<string, string> };
    };
    const r = await alternate(rounds, () => wrk(strata.match, users('/v1/users'), concurrency, seconds), () => wrk(peer.match, users('/users'), concurrency, seconds));
    await stop(strata.proc);
    await stop(peer.proc);
    const [s, p] = [r.strata, r.peer];
    if (s.errors || p.errors) throw new Error(`http_write saw errors: strata ${s.errors}, peer ${p.errors}`);
    const notes = `wrk, ${concurrency} connections, best of ${rounds} alternating runs of ${seconds} s`;
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
