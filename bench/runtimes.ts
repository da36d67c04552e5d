import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { row, stop, type BenchOptions, type ResultRow } from './lib.js';
import { alternate, wrk } from './load.js';
import { readRequest, seedChat, startStrata } from './conversations.js';

// message_read under Bun (Bun.serve, bun:sqlite) beside the same build under Node (node:http,
// better-sqlite3), both up at once and measured alternately with wrk at 64 connections: the
// hot read of the last 50 messages, as in the message_read row. Bun comes from the npm
// devDependency, so the row runs wherever `npm ci` did.

const BUN = fileURLToPath(new URL('../../node_modules/.bin/bun', import.meta.url));

export async function runtimes(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 2 : 5;
  const rounds = opts.quick ? 2 : 3;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-rt-'));
  const procs: Array<import('node:child_process').ChildProcess> = [];
  try {
    const bun = await startStrata(join(dir, 'bun'), [BUN]);
    procs.push(bun.proc);
    const node = await startStrata(join(dir, 'node'));
    procs.push(node.proc);
    const b = await seedChat(bun.url, bun.token);
    const n = await seedChat(node.url, node.token);
    const r = await alternate(rounds, () => wrk(bun.url, readRequest(b.convs, bun.token), 64, seconds), () => wrk(node.url, readRequest(n.convs, node.token), 64, seconds));
    if (r.strata.errors || r.peer.errors) throw new Error(`message_read_runtime saw errors: bun ${r.strata.errors}, node ${r.peer.errors}`);
    return [
      row({
        name: 'message_read_runtime',
        metric: 'throughput under Bun, 64 connections',
        unit: 'req/s',
        value: Math.round(r.strata.perSecond),
        peer: 'the same build under Node',
        peer_value: Math.round(r.peer.perSecond),
        better: 'higher',
        notes: `wrk, 64 connections, best of ${rounds} alternating runs of ${seconds} s; Bun.serve + bun:sqlite vs node:http + better-sqlite3; goal ≥ 1.5×`,
      }),
    ];
  } finally {
    for (const p of procs) await stop(p);
    rmSync(dir, { recursive: true, force: true });
  }
}
