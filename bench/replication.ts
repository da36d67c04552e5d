import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { closedLoop, duSize, row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags } from './lib.js';

// replication_lag: p50/p99 of how far a replica trails its primary under a steady stream of
// message appends (64 connections), sampled every 20 ms; the peer is the same load with no
// replica attached, compared by throughput. restore_throughput: MB/s of `strata restore
// --to latest` over the backup target vs `cp -r` of the same bytes.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');

function get(base: string, path: string, token: string): Promise<any> {
  return new Promise((resolve, reject) => {
    request(new URL(path, base), { headers: { authorization: `Bearer ${token}` } }, (res) => {
      let t = '';
      res.on('data', (c: Buffer) => (t += c.toString()));
      res.on('end', () => resolve(JSON.parse(t)));
    })
      .on('error', reject)
      .end();
  });
}

function post(base: string, path: string, token: string, body: unknown): Promise<any> {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      let t = '';
      res.on('data', (c: Buffer) => (t += c.toString()));
      res.on('end', () => resolve(t ? JSON.parse(t) : null));
    });
    req.on('error', reject);
    req.end(data);
  });
}


async function serve(dataDir: string, set: string[] = []) {
  const args = [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${dataDir}`, ...set.flatMap((s) => ['--set', s])];
  return spawnUntil(process.execPath, args, /"url":"(http:\/\/[^"]+)"/);
}

async function appendLoad(base: string, token: string, seconds: number) {
  await post(base, '/v1/users', token, { id: 'bench', email: 'bench@example.com', tier: 'enterprise' });
  const convs: string[] = [];
  for (let i = 0; i < 64; i++) convs.push((await post(base, '/v1/conversations', token, { user_id: 'bench' })).id);
  const body = JSON.stringify({ role: 'user', content: 'a steady stream of chat messages '.repeat(6), tokens: 40 });
  return closedLoop(base, 64, seconds, (i) => ({ method: 'POST', path: `/v1/conversations/${convs[i % 64]}/messages`, headers: { authorization: `Bearer ${token}` }, body }));
}

export async function replication(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 5 : 15;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-repl-'));
  const rows: ResultRow[] = [];
  try {
    // Peer: no replica.
    const solo = await serve(join(dir, 'solo'), ['backup.enabled=false']);
    const soloToken = readFileSync(join(dir, 'solo', 'admin.token'), 'utf8').trim();
    const soloLoad = await appendLoad(solo.match, soloToken, seconds);
    await stop(solo.proc);

    const p = await serve(join(dir, 'primary'));
    const token = readFileSync(join(dir, 'primary', 'admin.token'), 'utf8').trim();
    mkdirSync(join(dir, 'replica'), { recursive: true });
    writeFileSync(join(dir, 'replica', 'admin.token'), token);
    const r = await serve(join(dir, 'replica'), ['node.id=bench-replica', 'replication.role=replica', `replication.primary_url=${p.match}`, `replication.token=${token}`]);
    const samples: Array<{ t: number; p: number; r: number }> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const [ps, rs] = await Promise.all([get(p.match, '/v1/admin/status', token), get(r.match, '/v1/admin/status', token)]);
        samples.push({ t: performance.now(), p: ps.lsn as number, r: rs.lsn as number });
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    const load = await appendLoad(p.match, token, seconds);
    sampling = false;
    await sampler;
    // Lag of a sample: time since the primary first held a record the replica has not applied.
    const lags = samples.map((s) => {
      if (s.r >= s.p) return 0;
      const first = samples.find((x) => x.p > s.r);
      return first ? Math.max(0, s.t - first.t) : 0;
    });
    lags.sort((a, b) => a - b);
    const q = (x: number) => lags[Math.min(lags.length - 1, Math.floor(x * lags.length))] ?? 0;
    const notes = `${seconds}s of message appends at 64 connections; ${samples.length} samples of both nodes' LSN every ~20 ms`;
    // Lag has no peer (a node without a replica has none): these rows carry the figure itself.
    const lagRow = (metric: string, v: number) => row({ name: 'replication_lag', metric, unit: 'ms', value: v, peer: 'none: absolute figure', peer_value: v, better: 'lower', notes });
    rows.push(lagRow('p50 lag', Math.round(q(0.5))));
    rows.push(lagRow('p99 lag', Math.round(q(0.99))));
    rows.push(row({ name: 'replication_lag', metric: 'append throughput with a replica', unit: 'req/s', value: Math.round(load.perSecond), peer: 'the same appends, no replica', peer_value: Math.round(soloLoad.perSecond), better: 'higher', notes }));
    await stop(r.proc);

    // Restore everything the primary shipped.
    await get(p.match, '/v1/admin/backups', token);
    await stop(p.proc);
    const backups = join(dir, 'primary', 'backups');
    const bytes = duSize(backups);
    let t0 = performance.now();
    const restored = spawnSync(process.execPath, [CLI, 'restore', '--to', 'latest', '--target-dir', join(dir, 'restored'), '--set', `storage.data_dir=${join(dir, 'primary')}`], { encoding: 'utf8' });
    const restoreSeconds = (performance.now() - t0) / 1000;
    if (restored.status !== 0) throw new Error(`restore failed: ${restored.stderr}`);
    t0 = performance.now();
    execFileSync('cp', ['-r', backups, join(dir, 'copied')]);
    const cpSeconds = (performance.now() - t0) / 1000;
    const mb = bytes / 1e6;
    rows.push(row({ name: 'restore_throughput', metric: 'throughput', unit: 'MB/s', value: Math.round((mb / restoreSeconds) * 10) / 10, peer: 'cp -r of the same backup files', peer_value: Math.round((mb / cpSeconds) * 10) / 10, better: 'higher', notes: `${mb.toFixed(1)} MB of snapshots and segments; restore includes process start, checksum checks and replaying ${JSON.parse(restored.stdout).stores[0].records} records` }));
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
