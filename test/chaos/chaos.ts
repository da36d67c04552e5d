import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unpack } from 'msgpackr';
import { api } from '../helpers/daemon.js';
import type { ChaosNode, Cluster } from './cluster.js';

// The partition test's client side and checker (Jepsen-style, bounded in time). Clients loop
// on synchronous billing entries and asynchronous message appends through the health-routed
// address and note every answer: acknowledged (with the epoch and node that gave it), refused,
// or unknown (timed out, connection cut: it may or may not have happened). Meanwhile rounds of
// faults hit the cluster. At the end, with every fault healed and the nodes caught up, the
// checker asserts:
// - every acknowledged synchronous write is on the final primary;
// - every acknowledged asynchronous write is on the final primary or in a rollback file;
// - no two nodes acknowledged writes in one epoch;
// - the nodes agree (each replica holds what the primary holds).

export type Fault = 'kill-primary' | 'pause-primary' | 'isolate-primary' | 'cut-primary-from-etcd' | 'kill-replica' | 'pause-replica' | 'isolate-replica';
export const FAULTS: Fault[] = ['kill-primary', 'pause-primary', 'isolate-primary', 'cut-primary-from-etcd', 'kill-replica', 'pause-replica', 'isolate-replica'];

export interface Ack {
  kind: 'sync' | 'async';
  key: string;
  epoch: number;
  node: string;
}

export interface ChaosReport {
  rounds: Array<{ fault: Fault; target: string; primaryAfter: string; seconds: number }>;
  writes: { sync: { acked: number; refused: number; unknown: number }; async: { acked: number; refused: number; unknown: number } };
  lostSync: string[];
  lostAsync: string[];
  inRollback: number;
  /** Epochs in which more than one node acknowledged a write. */
  splitEpochs: Array<{ epoch: number; nodes: string[] }>;
  /** Replicas whose stores differ from the final primary's. */
  diverged: string[];
  finalPrimary: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A small seeded generator: a failing run is repeated with CHAOS_SEED. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

export async function runChaos(cluster: Cluster, options: { faults: Fault[]; seed: number; log: (line: string) => void }): Promise<ChaosReport> {
  const rand = random(options.seed);
  const ttl = cluster.ttlMs;
  const via = { url: cluster.url, adminToken: cluster.token };
  const acks: Ack[] = [];
  const counts = { sync: { acked: 0, refused: 0, unknown: 0 }, async: { acked: 0, refused: 0, unknown: 0 } };

  await until(async () => (await api(via, 'POST', '/v1/users', { id: 'chaos', email: 'chaos@example.com', tier: 'free' }).catch(() => ({ status: 0 }))).status === 201, 30_000, 'the first write through HAProxy');
  const conv = await api(via, 'POST', '/v1/conversations', { id: 'chaos-conv', user_id: 'chaos' });
  if (conv.status !== 201) throw new Error(`creating the conversation answered ${conv.status}`);

  const seenRefusals = new Set<string>();
  let running = true;
  let n = 0;
  const client = async (kind: 'sync' | 'async') => {
    while (running) {
      const key = `${kind}-${++n}`;
      const [path, body] =
        kind === 'sync'
          ? ['/v1/billing/entries', { user_id: 'chaos', kind: 'charge', amount_micros: 1, currency: 'USD', ref: key }]
          : ['/v1/conversations/chaos-conv/messages', { role: 'user', content: key }];
      try {
        const res = await fetch(cluster.url + path, {
          method: 'POST',
          headers: { authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(8000),
        });
        const text = await res.text();
        if (res.status !== 201 && !seenRefusals.has(`${kind} ${res.status}`)) {
          seenRefusals.add(`${kind} ${res.status}`);
          options.log(`  first ${res.status} to a ${kind} write: ${text.slice(0, 300)}`);
        }
        if (res.status === 201) {
          counts[kind].acked++;
          acks.push({ kind, key, epoch: Number(res.headers.get('strata-epoch')), node: res.headers.get('x-served-by') ?? '?' });
        } else if (res.status >= 500 && res.status !== 503) counts[kind].unknown++;
        else counts[kind].refused++;
      } catch {
        counts[kind].unknown++;
        await sleep(50);
      }
    }
  };
  const clients = [client('sync'), client('sync'), client('async'), client('async')];

  const rounds: ChaosReport['rounds'] = [];
  try {
    await sleep(ttl);
    for (const fault of options.faults) {
      const t0 = performance.now();
      const primary = await currentPrimary(cluster, 60_000);
      const replicas = cluster.nodes.filter((x) => x !== primary);
      const target = fault.includes('primary') ? primary : replicas[Math.floor(rand() * replicas.length)]!;
      options.log(`round ${rounds.length + 1}: ${fault} ${target.id} (primary ${primary.id})`);
      // Long enough for the lease to lapse and a replica to stand, or not, at random.
      const hold = ttl * (1 + rand() * 2.5);
      switch (fault) {
        case 'kill-primary':
        case 'kill-replica':
          await target.daemon!.kill9();
          await sleep(hold);
          await cluster.start(target);
          break;
        case 'pause-primary':
        case 'pause-replica':
          target.daemon!.proc.kill('SIGSTOP');
          target.paused = true;
          await sleep(hold);
          target.daemon!.proc.kill('SIGCONT');
          target.paused = false;
          break;
        case 'isolate-primary':
        case 'isolate-replica':
          target.inbound.cut();
          target.toEtcd.cut();
          await sleep(hold);
          target.inbound.heal();
          target.toEtcd.heal();
          break;
        case 'cut-primary-from-etcd':
          target.toEtcd.cut();
          await sleep(hold);
          target.toEtcd.heal();
          break;
      }
      // Healed: wait for one writable primary and replicas that caught up before the next round.
      const after = await settled(cluster, 90_000);
      rounds.push({ fault, target: target.id, primaryAfter: after.id, seconds: Math.round((performance.now() - t0) / 100) / 10 });
      options.log(`  settled: primary ${after.id} after ${rounds.at(-1)!.seconds} s; acked ${counts.sync.acked} sync, ${counts.async.acked} async`);
    }
  } finally {
    running = false;
    await Promise.all(clients);
  }

  const primary = await settled(cluster, 90_000, true);
  return check(cluster, primary, acks, counts, rounds);
}

async function until(test: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function currentPrimary(cluster: Cluster, timeoutMs: number): Promise<ChaosNode> {
  let found: ChaosNode | undefined;
  await until(
    async () => {
      const writable = (await cluster.states()).filter((s) => s.state.role === 'primary' && s.state.writable);
      found = writable.length === 1 ? writable[0]!.node : undefined;
      return found !== undefined;
    },
    timeoutMs,
    'exactly one writable primary',
  );
  return found!;
}

/**
 * One writable primary, every node answering at its epoch, and each replica caught up: at the
 * primary's LSNs (`exact`, once the clients have stopped), or past where the primary was a
 * moment before (while they still write).
 */
async function settled(cluster: Cluster, timeoutMs: number, exact = false): Promise<ChaosNode> {
  let primary: ChaosNode | undefined;
  const look = async () => {
    const states = await cluster.states();
    const primaries = states.filter((s) => s.state.role === 'primary');
    if (states.length !== cluster.nodes.length || primaries.length !== 1 || !primaries[0]!.state.writable) return undefined;
    if (states.some((s) => s.state.epoch !== primaries[0]!.state.epoch)) return undefined;
    return { states, p: primaries[0]! };
  };
  await until(
    async () => {
      const before = await look();
      if (!before) return false;
      primary = before.p.node;
      const target = before.p.state.lsn;
      if (!exact) await sleep(300);
      const after = exact ? before : await look();
      if (!after || after.p.node !== primary) return false;
      return after.states.every((s) => (exact ? s.state.lsn.main === target.main && s.state.lsn.billing === target.billing : s.state.lsn.main >= target.main && s.state.lsn.billing >= target.billing));
    },
    timeoutMs,
    'the cluster to settle (one writable primary, replicas caught up)',
  ).catch(async (err: Error) => {
    const states = (await cluster.states()).map((s) => JSON.stringify(s.state)).join('\n');
    throw new Error(`${err.message}\n${states}\n${describe(cluster)}`);
  });
  return primary!;
}

function describe(cluster: Cluster): string {
  return cluster.nodes.map((n) => `--- ${n.id} (last run) ---\n${(n.logs.at(-1) ?? '').split('\n').filter((l) => !l.includes('"msg":"request"')).slice(-40).join('\n')}`).join('\n');
}

async function readAll(node: ChaosNode, token: string, path: string, pick: (item: any) => string): Promise<Set<string>> {
  const out = new Set<string>();
  let cursor: string | undefined;
  for (;;) {
    const res = await api({ url: `http://127.0.0.1:${node.port}`, adminToken: token }, 'GET', `${path}${path.includes('?') ? '&' : '?'}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (res.status !== 200) throw new Error(`${path} on ${node.id} answered ${res.status}: ${JSON.stringify(res.body)}`);
    for (const item of res.body.items) out.add(pick(item));
    cursor = res.body.next_cursor ?? undefined;
    if (!cursor) return out;
  }
}

/** Every string inside a rollback file's records (message contents and billing refs among them). */
function rolledBackStrings(cluster: Cluster): Set<string> {
  const out = new Set<string>();
  const walk = (v: unknown) => {
    if (typeof v === 'string') out.add(v);
    // A record's payload is itself MessagePack.
    else if (v instanceof Uint8Array) walk(unpack(v));
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  for (const n of cluster.nodes) {
    const dir = join(n.dataDir, 'rollback');
    let files: string[] = [];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith('.msgpack'));
    } catch {
      continue;
    }
    for (const f of files) walk(unpack(readFileSync(join(dir, f))));
  }
  return out;
}

async function check(cluster: Cluster, primary: ChaosNode, acks: Ack[], counts: ChaosReport['writes'], rounds: ChaosReport['rounds']): Promise<ChaosReport> {
  const billing = await readAll(primary, cluster.token, '/v1/billing/entries?user_id=chaos', (e) => e.ref);
  const messages = await readAll(primary, cluster.token, '/v1/conversations/chaos-conv/messages', (m) => m.content);
  const rolledBack = rolledBackStrings(cluster);
  const lostSync = acks.filter((a) => a.kind === 'sync' && !billing.has(a.key)).map((a) => a.key);
  const missing = acks.filter((a) => a.kind === 'async' && !messages.has(a.key));
  const lostAsync = missing.filter((a) => !rolledBack.has(a.key)).map((a) => a.key);
  const byEpoch = new Map<number, Set<string>>();
  for (const a of acks) byEpoch.set(a.epoch, (byEpoch.get(a.epoch) ?? new Set()).add(a.node));
  const splitEpochs = [...byEpoch].filter(([, nodes]) => nodes.size > 1).map(([epoch, nodes]) => ({ epoch, nodes: [...nodes] }));
  const diverged: string[] = [];
  for (const n of cluster.nodes.filter((x) => x !== primary)) {
    const b = await readAll(n, cluster.token, '/v1/billing/entries?user_id=chaos', (e) => e.ref);
    const m = await readAll(n, cluster.token, '/v1/conversations/chaos-conv/messages', (x) => x.content);
    if (b.size !== billing.size || m.size !== messages.size || [...billing].some((k) => !b.has(k)) || [...messages].some((k) => !m.has(k))) diverged.push(n.id);
  }
  return { rounds, writes: counts, lostSync, lostAsync, inRollback: missing.length - lostAsync.length, splitEpochs, diverged, finalPrimary: primary.id };
}
