import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { daemonFlags, freePort, row, spawnUntil, stop, type BenchOptions, type ResultRow } from './lib.js';

// failover: kill -9 of the primary → the first write acknowledged by the new primary, with
// three nodes, replication.failover: auto, the lease in a real etcd at the default ttl (10 s)
// and synchronous billing on. A client polls every node with a write every 50 ms, as a
// health-routed client would. Issue 16's goal is < 30 s (the seed promised 2 min); there is
// no bare peer to run beside it, so the peer column is that goal, and the notes give the
// floor the lease's lapse rule sets (4/3 ttl unchanged, seen at ttl/3 looks).

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const TTL_MS = 10_000;

async function startEtcd(dir: string): Promise<{ url: string; proc: ChildProcess }> {
  const [client, peer] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${client}`;
  const proc = spawn('etcd', ['--name', 'm1', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', url, '--advertise-client-urls', url, '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--initial-cluster', `m1=http://127.0.0.1:${peer}`], { stdio: 'ignore' });
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/health`)).ok) return { url, proc };
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error('etcd did not start in 20 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function write(url: string, token: string, id: string): Promise<number> {
  try {
    const res = await fetch(`${url}/v1/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ id, email: `${id}@example.com`, tier: 'free' }), signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** One failover: seconds from kill -9 to the first write acknowledged by another node. */
async function once(dir: string, etcdUrl: string, run: number): Promise<number> {
  const nodes = ['f1', 'f2', 'f3'].map((id) => ({ id, dir: join(dir, `${run}-${id}`) }));
  const lease = ['replication.lease.enabled=true', 'replication.lease.store=etcd', `replication.lease.etcd_endpoints=[${etcdUrl}]`, `replication.lease.ttl_ms=${TTL_MS}`, 'replication.failover=auto', 'replication.sync_min_replicas=1'];
  const serve = (id: string, dataDir: string, set: string[]) =>
    spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${dataDir}`, '--set', `node.id=${id}`, ...set.flatMap((s) => ['--set', s])], /"url":"(http:\/\/[^"]+)"/);
  // The primary once without a token (it mints the admin token), then with it, so it can follow.
  let p = await serve('f1', nodes[0]!.dir, lease);
  const token = readFileSync(join(nodes[0]!.dir, 'admin.token'), 'utf8').trim();
  await stop(p.proc);
  p = await serve('f1', nodes[0]!.dir, [...lease, `replication.token=${token}`]);
  const procs = [p];
  for (const n of nodes.slice(1)) {
    mkdirSync(n.dir, { recursive: true });
    writeFileSync(join(n.dir, 'admin.token'), token + '\n');
    procs.push(await serve(n.id, n.dir, [...lease, 'replication.role=replica', `replication.primary_url=${p.match}`, `replication.token=${token}`]));
  }
  try {
    // Writable, and both replicas caught up (a lagging replica would not stand).
    for (let i = 0; (await write(p.match, token, `before-${i}`)) !== 201; i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 2000));
    const t0 = performance.now();
    p.proc.kill('SIGKILL');
    await new Promise((r) => p.proc.once('exit', r));
    const others = procs.slice(1).map((x) => x.match);
    for (let i = 0; ; i++) {
      const answers = await Promise.all(others.map((url) => write(url, token, `after-${i}-${others.indexOf(url)}`)));
      if (answers.includes(201)) return (performance.now() - t0) / 1000;
      if (performance.now() - t0 > 120_000) throw new Error('no replica took over within 120 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    for (const x of procs) await stop(x.proc);
  }
}

export async function failover(opts: BenchOptions): Promise<ResultRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-failover-'));
  const runs = opts.quick ? 1 : 3;
  const times: number[] = [];
  const etcd = await startEtcd(dir);
  try {
    // Each run starts from an empty etcd: the last run's lease (held by a node now stopped) goes.
    for (let run = 0; run < runs; run++) {
      await fetch(`${etcd.url}/v3/kv/deleterange`, { method: 'POST', body: JSON.stringify({ key: Buffer.from('\0').toString('base64'), range_end: Buffer.from('\0').toString('base64') }) });
      times.push(await once(dir, etcd.url, run));
    }
  } finally {
    await stop(etcd.proc);
    rmSync(dir, { recursive: true, force: true });
  }
  times.sort((a, b) => a - b);
  const worst = Math.round(times.at(-1)! * 10) / 10;
  return [
    row({
      name: 'failover',
      metric: 'kill -9 of the primary → first acknowledged write (worst)',
      unit: 's',
      value: worst,
      peer: 'goal of issue 16 at ttl 10 s (the seed: 120 s); no bare peer',
      peer_value: 30,
      better: 'lower',
      notes: `${runs} run(s): ${times.map((t) => t.toFixed(1)).join(', ')} s; 3 nodes, etcd lease ttl ${TTL_MS / 1000} s, synchronous billing; floor of the lapse rule ≈ ${((TTL_MS * 4) / 3 / 1000).toFixed(1)}–${((TTL_MS * 5) / 3 / 1000).toFixed(1)} s`,
    }),
  ];
}
