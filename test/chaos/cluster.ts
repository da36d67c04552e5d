import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';
import { startEtcd, type Etcd } from '../helpers/etcd.js';
import { freePort } from '../helpers/redis.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

// Three Strata nodes with automatic failover on an etcd lease, wired so a test can cut any
// node off: every node reaches its peers and etcd only through TCP proxies (a node's
// advertised URL is its inbound proxy; its etcd endpoint is its own proxy to etcd), while
// clients reach the nodes directly through HAProxy routing writes by GET /primary. So an
// isolated primary still hears clients — the case where split brain would show.

export const HAS_HAPROXY = spawnSync('haproxy', ['-v']).status === 0;

export interface ChaosNode {
  id: string;
  port: number;
  dataDir: string;
  /** Peers and replicas reach this node through it. */
  inbound: TcpProxy;
  /** This node's only way to etcd. */
  toEtcd: TcpProxy;
  daemon: Daemon | undefined;
  /** Set while SIGSTOPped. */
  paused: boolean;
  /** Output of every run of this node, kept across restarts (for a failing test's report). */
  logs: string[];
}

export interface Cluster {
  nodes: ChaosNode[];
  /** The health-routed write address (HAProxy). */
  url: string;
  token: string;
  etcd: Etcd;
  ttlMs: number;
  start(node: ChaosNode): Promise<void>;
  /** Each running node's own view: {node_id, role, epoch, lsn, writable}. */
  states(): Promise<Array<{ node: ChaosNode; state: any }>>;
  stop(): Promise<void>;
}

export async function startCluster(options: { ttlMs: number }): Promise<Cluster> {
  const etcd = await startEtcd();
  const etcdPort = Number(new URL(etcd.url).port);
  const nodes: ChaosNode[] = [];
  for (const id of ['n1', 'n2', 'n3']) {
    const port = await freePort();
    nodes.push({ id, port, dataDir: tempDir(`strata-chaos-${id}-`), inbound: await startTcpProxy(port), toEtcd: await startTcpProxy(etcdPort), daemon: undefined, paused: false, logs: [] });
  }
  const peerUrl = (n: ChaosNode) => `http://127.0.0.1:${n.inbound.port}`;
  let token = '';
  const settings = (n: ChaosNode) => [
    `node.id=${n.id}`,
    `server.listen=127.0.0.1:${n.port}`,
    `replication.advertise_url=${peerUrl(n)}`,
    'replication.failover=auto',
    'replication.lease.enabled=true',
    'replication.lease.store=etcd',
    `replication.lease.ttl_ms=${options.ttlMs}`,
    `replication.lease.etcd_endpoints=[http://127.0.0.1:${n.toEtcd.port}]`,
    'replication.synchronous=[billing]',
    'replication.sync_min_replicas=1',
    'replication.sync_timeout_ms=3000',
    ...(token ? [`replication.token=${token}`] : []),
    ...(n.id === 'n1' ? [] : ['replication.role=replica', `replication.primary_url=${peerUrl(nodes[0]!)}`]),
    // The workload runs hot; a token's default request budget is not what is tested here.
    'security.rate_limit.requests_per_second=0',
  ];
  const start = async (n: ChaosNode) => {
    const d = await startDaemon({ dataDir: n.dataDir, set: settings(n) });
    n.daemon = d;
    n.paused = false;
    n.logs.push('');
    const slot = n.logs.length - 1;
    const keep = () => (n.logs[slot] = d.output());
    d.proc.stdout!.on('data', keep);
    d.proc.stderr!.on('data', keep);
  };

  // n1 first, once without a token to mint the admin token every node then shares (tokens
  // replicate), then again with it as replication.token so it can follow whoever replaces it.
  const n1 = nodes[0]!;
  await start(n1);
  token = n1.daemon!.adminToken;
  await n1.daemon!.stop();
  await start(n1);
  for (const n of nodes.slice(1)) {
    mkdirSync(n.dataDir, { recursive: true });
    writeFileSync(join(n.dataDir, 'admin.token'), token + '\n');
    await start(n);
  }

  const haproxy = await startHaproxy(nodes);
  const cluster: Cluster = {
    nodes,
    url: haproxy.url,
    token,
    etcd,
    ttlMs: options.ttlMs,
    start,
    async states() {
      const out: Array<{ node: ChaosNode; state: any }> = [];
      for (const node of nodes) {
        if (!node.daemon || node.paused || node.daemon.proc.exitCode !== null || node.daemon.proc.signalCode !== null) continue;
        try {
          const res = await fetch(`http://127.0.0.1:${node.port}/v1/replication/position`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(2000) });
          out.push({ node, state: await res.json() });
        } catch {
          // not answering
        }
      }
      return out;
    },
    async stop() {
      haproxy.proc.kill('SIGKILL');
      for (const n of nodes) {
        if (n.daemon && n.paused) n.daemon.proc.kill('SIGCONT');
        await n.daemon?.kill9();
        await n.inbound.close();
        await n.toEtcd.close();
      }
      await etcd.stop();
    },
  };
  return cluster;
}

/**
 * HAProxy with the shipped example's write backend (GET /primary), fast checks, and each
 * answer labelled with the server that gave it (X-Served-By): the checker needs to know which
 * node acknowledged a write.
 */
async function startHaproxy(nodes: ChaosNode[]): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const dir = tempDir('strata-chaos-haproxy-');
  const config = [
    'global',
    '    maxconn 4096',
    'defaults',
    '    mode http',
    '    timeout connect 2s',
    '    timeout client 30s',
    '    timeout server 30s',
    '    option http-server-close',
    'frontend writes',
    `    bind 127.0.0.1:${port}`,
    '    default_backend primary',
    'backend primary',
    '    option httpchk GET /primary',
    '    http-check expect status 200',
    '    timeout check 1s',
    '    default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions',
    '    http-response set-header X-Served-By %s',
    ...nodes.map((n) => `    server ${n.id} 127.0.0.1:${n.port} check`),
    '',
  ].join('\n');
  writeFileSync(join(dir, 'haproxy.cfg'), config);
  const proc = spawn('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await api({ url, adminToken: '' }, 'GET', '/healthz', undefined, null).catch(() => ({ status: 0 }));
    if (up.status === 200) break;
    if (Date.now() > deadline) throw new Error('haproxy did not route to the primary in 15 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, proc };
}
