import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { parseConfig } from '../src/daemon/config.js';
import { createLogger } from '../src/daemon/logger.js';
import { StrataNode, SYSTEM } from '../src/daemon/strata-node.js';
import { duSize, row, spawnUntil, stop, type BenchOptions, type ResultRow } from './lib.js';

// Issue 19's large-state rows, on a data dir built in this process through the engines (the
// HTTP path is measured elsewhere; here only the state matters):
// - phase A: users, conversations holding ~1 KB messages appended in large batches, and a
//   vector collection, until the main database reaches the target size; then a backup
//   snapshot of it;
// - phase B: small writes (one message per append, from 64 concurrent writers), each a change
//   record shipped in backup segments after the snapshot.
// Then restore_throughput (`strata restore --to latest` vs `cp -r` of the same backup files,
// snapshot and replay parts apart, replay records/s vs raw better-sqlite3 batched inserts of
// rows of the same size) and cold_start (daemon start to listening on the restored dir, no
// vector index rebuilt). Full size: 1 GiB of SQLite and 1 M change records; --quick: 64 MiB
// and 100 k.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const MiB = 1024 * 1024;

const text = (i: number) => `message ${i}: ${'the quick brown fox jumps over the lazy dog; '.repeat(22)}`.slice(0, 1000);

/** Runs `n` tasks with at most `width` in flight. */
async function pool(n: number, width: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await task(next++);
  }));
}

export async function largeState(opts: BenchOptions): Promise<ResultRow[]> {
  const targetBytes = opts.quick ? 64 * MiB : 1024 * MiB;
  const records = opts.quick ? 100_000 : 1_000_000;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-large-'));
  const rows: ResultRow[] = [];
  try {
    const dataDir = join(dir, 'node');
    const config = parseConfig('{}', { overrides: [`storage.data_dir=${dataDir}`, 'backup.segment_seconds=1', 'backup.snapshot_interval_seconds=864000', 'vectors.max_batch=10000'] });
    const node = await StrataNode.open(config, createLogger('silent'));
    const say = (s: string) => process.stderr.write(`large_state: ${s}\n`);
    // --- phase A: bulk state --------------------------------------------------------------
    const users = 1000;
    for (let u = 0; u < users; u++) await node.users.create(SYSTEM, { id: `u${u}`, email: `u${u}@example.com`, tier: 'free' });
    const convs: string[] = [];
    for (let c = 0; c < 2000; c++) convs.push((await node.conversations.create(SYSTEM, { user_id: `u${c % users}` })).id);
    const mainDb = join(dataDir, 'strata.db');
    const size = () => statSync(mainDb).size + (statSync(`${mainDb}-wal`, { throwIfNoEntry: false })?.size ?? 0);
    let m = 0;
    while (size() < targetBytes) {
      await pool(16, 4, async (k) => {
        const conv = convs[(m / 500 + k) % convs.length]!;
        await node.conversations.append(SYSTEM, conv, Array.from({ length: 500 }, (_, j) => ({ role: j % 2 ? ('assistant' as const) : ('user' as const), content: text(m + k * 500 + j), tokens: 250 })));
      });
      m += 16 * 500;
      say(`phase A: ${m} messages, ${(size() / MiB).toFixed(0)} MiB`);
    }
    await node.vectors.createCollection(SYSTEM, { name: 'docs', dimensions: 128, metric: 'cos', dtype: 'f32', connectivity: 16, expansion_add: 64, expansion_search: 64 });
    const vectorsN = opts.quick ? 10_000 : 50_000;
    for (let i = 0; i < vectorsN; i += 5000) {
      const items = Array.from({ length: Math.min(5000, vectorsN - i) }, (_, j) => ({ id: `v${i + j}`, values: Array.from({ length: 128 }, (_, d) => Math.sin(i + j + d)), metadata: { n: i + j } }));
      await node.vectors.upsert(SYSTEM, 'docs', items);
    }
    await node.backups!.snapshotNow();
    const snapshotLsn = node.sql.writer.lastLsn;
    // --- phase B: small writes, shipped as segments ---------------------------------------
    const started = performance.now();
    await pool(records / 2, 64, async (i) => {
      await node.conversations.append(SYSTEM, convs[i % convs.length]!, [{ role: 'user', content: text(i) }]);
    });
    say(`phase B: ${node.sql.writer.lastLsn - snapshotLsn} change records in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    await node.close();
    const logged = readdirSync(join(dataDir, 'backups'), { recursive: true }).length;
    const backupBytes = duSize(join(dataDir, 'backups'));

    // --- restore vs cp -r -----------------------------------------------------------------
    execFileSync('sync');
    let t0 = performance.now();
    const restored = spawnSync(process.execPath, [CLI, 'restore', '--to', 'latest', '--target-dir', join(dir, 'restored'), '--set', `storage.data_dir=${dataDir}`], { encoding: 'utf8', maxBuffer: 64 * MiB });
    const restoreSeconds = (performance.now() - t0) / 1000;
    if (restored.status !== 0) throw new Error(`restore failed: ${restored.stderr}`);
    const result = JSON.parse(restored.stdout) as { stores: Array<{ store: string; records: number; bytes: number; snapshot_seconds: number; replay_seconds: number }> };
    execFileSync('sync');
    t0 = performance.now();
    execFileSync('cp', ['-r', join(dataDir, 'backups'), join(dir, 'copied')]);
    execFileSync('sync');
    const cpSeconds = (performance.now() - t0) / 1000;
    const main = result.stores.find((s) => s.store === 'main')!;
    const replayed = result.stores.reduce((n, s) => n + s.records, 0);
    const replaySeconds = result.stores.reduce((n, s) => n + s.replay_seconds, 0);
    const snapshotSeconds = result.stores.reduce((n, s) => n + s.snapshot_seconds, 0);
    const mb = backupBytes / 1e6;

    // --- raw better-sqlite3 batched inserts of rows of the same size ----------------------
    const raw = new Database(join(dir, 'raw.db'));
    raw.pragma('journal_mode = WAL');
    raw.pragma('synchronous = OFF');
    raw.exec('CREATE TABLE m (conversation_id TEXT, seq INTEGER, role TEXT, content TEXT, tokens INTEGER, created_at TEXT, PRIMARY KEY (conversation_id, seq)) WITHOUT ROWID');
    const insert = raw.prepare('INSERT INTO m VALUES (?, ?, ?, ?, ?, ?)');
    const batch = raw.transaction((from: number, n: number) => {
      for (let i = from; i < from + n; i++) insert.run(`c${i % 2000}`, i, 'user', text(i), 0, new Date().toISOString());
    });
    t0 = performance.now();
    for (let i = 0; i < replayed; i += 1000) batch(i, Math.min(1000, replayed - i));
    const rawSeconds = (performance.now() - t0) / 1000;
    raw.close();

    // --- cold start on the restored dir ---------------------------------------------------
    t0 = performance.now();
    const cold = await spawnUntil(process.execPath, [CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'restored')}`, '--set', 'backup.enabled=false'], /"url":"(http:\/\/[^"]+)"/);
    const startSeconds = (performance.now() - t0) / 1000;
    await stop(cold.proc);
    // The goal is a start that loads the saved vector index, never rebuilds it.
    const rebuilt = /rebuilding vector index/.test(cold.output);

    const notes = `${(main.bytes / MiB).toFixed(0)} MiB snapshot of main, ${replayed} change records in segments after it (${logged} backup files, ${mb.toFixed(0)} MB)`;
    rows.push(row({ name: 'restore_throughput', metric: 'large state, MB/s', unit: 'MB/s', value: Math.round((mb / restoreSeconds) * 10) / 10, peer: 'cp -r of the same backup files', peer_value: Math.round((mb / cpSeconds) * 10) / 10, better: 'higher', notes: `${notes}; restore ${restoreSeconds.toFixed(1)} s = snapshot ${snapshotSeconds.toFixed(1)} s + replay ${replaySeconds.toFixed(1)} s + process; goal ≥ 0.5` }));
    rows.push(row({ name: 'restore_replay', metric: 'records/s', unit: 'records/s', value: Math.round(replayed / Math.max(replaySeconds, 0.001)), peer: 'better-sqlite3 inserts of 1 KB rows in transactions of 1000', peer_value: Math.round(replayed / rawSeconds), better: 'higher', notes: `${replayed} records; goal ≥ 0.5` }));
    rows.push(row({ name: 'cold_start', metric: 'start to listening, restored large state', unit: 's', value: Math.round(startSeconds * 100) / 100, peer: 'the goal of issue 19', peer_value: 5, better: 'lower', notes: `${notes}; ${vectorsN} vectors (128 d): index ${rebuilt ? 'REBUILT (goal missed)' : 'loaded, not rebuilt (checked in the log)'}` }));
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
