import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { parseConfig } from '../src/daemon/config.js';
import { createLogger } from '../src/daemon/logger.js';
import { StrataNode } from '../src/daemon/strata-node.js';
import { row, type BenchOptions, type ResultRow } from './lib.js';

// append_engine: the write path without HTTP. 64 concurrent callers of conversations.append
// (one 200-character message per call, each caller its own conversation) and of usage.record,
// in this process, on a node with its defaults (synchronous=FULL, memory cache, audit on).
// The peer is raw better-sqlite3 inserting the same rows in transactions of the size the
// writer's group commit actually formed (its mean batch), in the same file layout (WAL,
// synchronous=FULL): what one SQLite file can commit, so the ratio is the engine's own cost.

const CALLERS = 64;
const CONTENT = 'The quick brown fox jumps over the lazy dog while the model explains attention heads, '.repeat(3).slice(0, 200);

export async function appendEngine(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 3 : 10;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-'));
  try {
    const config = parseConfig('{}', { overrides: [`storage.data_dir=${join(dir, 'strata')}`] });
    const node = await StrataNode.open(config, createLogger('silent'));
    const actor = { tokenId: 'bench' };
    let appends: { perSecond: number; batch: number };
    let usage: { perSecond: number; batch: number };
    try {
      await node.users.create(actor, { id: 'u1', email: 'u1@example.com', tier: 'enterprise' });
      const convs: string[] = [];
      for (let i = 0; i < CALLERS; i++) convs.push((await node.conversations.create(actor, { user_id: 'u1' })).id);
      const profiling = await startProfile();
      appends = await loop(node, seconds, (c) => node.conversations.append(actor, convs[c]!, [{ role: 'user', content: CONTENT }]));
      usage = await loop(node, seconds, () => node.usage.record(actor, { user_id: 'u1', model: 'm', input_tokens: 10, output_tokens: 20 }));
      await profiling?.();
    } finally {
      await node.close();
    }

    const rawAppend = rawInserts(join(dir, 'raw-messages.db'), seconds, Math.max(1, Math.round(appends.batch)), 'messages');
    const rawUsage = rawInserts(join(dir, 'raw-usage.db'), seconds, Math.max(1, Math.round(usage.batch)), 'usage');
    const notes = (b: number) => `${CALLERS} concurrent callers in process, ${seconds}s; mean group commit ${b.toFixed(1)} calls; synchronous=FULL both`;
    return [
      row({ name: 'append_engine', metric: 'conversations.append, 1 message per call', unit: 'appends/s', value: r(appends.perSecond), peer: 'better-sqlite3 inserts in transactions of the same size', peer_value: r(rawAppend), better: 'higher', notes: notes(appends.batch) }),
      row({ name: 'append_engine', metric: 'usage.record', unit: 'records/s', value: r(usage.perSecond), peer: 'better-sqlite3 inserts in transactions of the same size', peer_value: r(rawUsage), better: 'higher', notes: notes(usage.batch) }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** CALLERS callers each awaiting `call` in turn for `seconds`; the writer's mean batch from its metric. */
async function loop(node: StrataNode, seconds: number, call: (caller: number) => Promise<unknown>): Promise<{ perSecond: number; batch: number }> {
  const batches = async () => (await node.metrics.sqlBatchCalls.get()).values.filter((v) => !('le' in v.labels));
  const before = await batches();
  let done = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async (_, c) => {
      while (performance.now() < deadline) {
        await call(c);
        done++;
      }
    }),
  );
  const perSecond = done / ((performance.now() - started) / 1000);
  // The histogram's _sum and _count, before and after: calls per commit in this loop only.
  const after = await batches();
  const delta = (name: string) => (after.find((v) => v.metricName?.endsWith(name))?.value ?? 0) - (before.find((v) => v.metricName?.endsWith(name))?.value ?? 0);
  const commits = delta('_count');
  return { perSecond, batch: commits ? delta('_sum') / commits : 1 };
}

/**
 * Under `npm run profile -- append_engine` (STRATA_PROFILE_DIR set), the engine loops, and only
 * they, run under the V8 profiler: this benchmark has no daemon to start with --cpu-prof.
 */
async function startProfile(): Promise<(() => Promise<void>) | undefined> {
  const dir = process.env.STRATA_PROFILE_DIR;
  if (!dir) return undefined;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(join(dir, 'append-engine.cpuprofile'), JSON.stringify(profile));
    session.disconnect();
  };
}

/** Rows like the engine's, `batch` per transaction, for `seconds`: rows per second. */
function rawInserts(path: string, seconds: number, batch: number, kind: 'messages' | 'usage'): number {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE messages (conversation_id TEXT, seq INTEGER, role TEXT, content TEXT, tokens INTEGER, created_at TEXT, PRIMARY KEY (conversation_id, seq));
           CREATE TABLE usage (user_id TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER, cost_micros INTEGER, day TEXT, created_at TEXT)`);
  const insertMessage = db.prepare('INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)');
  const insertUsage = db.prepare('INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?)');
  const seqs = new Array<number>(CALLERS).fill(0);
  let rows = 0;
  const tx = db.transaction(() => {
    for (let i = 0; i < batch; i++) {
      const now = new Date().toISOString();
      if (kind === 'messages') {
        const c = (rows + i) % CALLERS;
        insertMessage.run(`conv-${c}`, ++seqs[c]!, 'user', CONTENT, 0, now);
      } else insertUsage.run('u1', 'm', 10, 20, 30, now.slice(0, 10), now);
    }
  });
  const started = performance.now();
  const deadline = started + seconds * 1000;
  while (performance.now() < deadline) {
    tx();
    rows += batch;
  }
  const perSecond = rows / ((performance.now() - started) / 1000);
  db.close();
  return perSecond;
}

function r(n: number): number {
  return Math.round(n * 10) / 10;
}
