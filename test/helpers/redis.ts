import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './daemon.js';
import { createServer } from 'node:net';

// A real redis-server per test file, on a free port, with persistence off. On a machine
// without redis-server the Redis tests skip — except under CI=true, where they fail, so a
// missing install step cannot pass unnoticed.

export const HAS_REDIS = spawnSync('redis-server', ['--version']).status === 0;

if (!HAS_REDIS && process.env.CI === 'true') {
  throw new Error('redis-server is not installed, and CI=true requires the Redis tests to run');
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  port: number;
  url: string;
  /** kill -9 (the API must keep answering while it is gone). */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(extraArgs: string[] = [], fixedPort?: number, ready = 'Ready to accept connections'): Promise<RedisServer> {
  const port = fixedPort ?? (await freePort());
  let proc: ChildProcess;
  const launch = () =>
    new Promise<void>((resolve, reject) => {
      const args = extraArgs[0]?.endsWith('.conf') ? [extraArgs[0], '--port', String(port), ...extraArgs.slice(1)] : ['--port', String(port), ...extraArgs];
      proc = spawn('redis-server', [...args, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 10_000);
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes(ready)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${out}`));
      });
    });
  await launch();
  const kill = () =>
    new Promise<void>((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once('exit', () => resolve());
      proc.kill('SIGKILL');
    });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    restart: launch,
    stop: kill,
  };
}

/** A port whose cluster bus port (+10000) is free too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const p = 20000 + Math.floor(Math.random() * 20000);
    if (await portFree(p) && (await portFree(p + 10000))) return p;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** Three masters in a Redis Cluster (no replicas), slots spread by redis-cli. */
export async function startRedisCluster(): Promise<{ nodes: Array<{ host: string; port: number }>; stop(): Promise<void> }> {
  const dir = tempDir('strata-redis-cluster-');
  const servers: RedisServer[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await clusterPort();
    servers.push(await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--dir', dir], port));
  }
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed:\n${create.stdout}${create.stderr}`);
  for (let i = 0; i < 100; i++) {
    const info = spawnSync('redis-cli', ['-p', String(servers[0]!.port), 'cluster', 'info'], { encoding: 'utf8' }).stdout;
    if (info.includes('cluster_state:ok')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    nodes: servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
    stop: async () => {
      for (const s of servers) await s.stop();
    },
  };
}

/** One master watched by one Sentinel (quorum 1) under the name `strata-master`. */
export async function startRedisSentinel(): Promise<{ sentinels: Array<{ host: string; port: number }>; name: string; stop(): Promise<void> }> {
  const master = await startRedis();
  const conf = join(tempDir('strata-sentinel-'), 'sentinel.conf');
  writeFileSync(conf, `sentinel monitor strata-master 127.0.0.1 ${master.port} 1\n`);
  const sentinel = await startRedis([conf, '--sentinel'], undefined, 'Sentinel ID');
  return {
    sentinels: [{ host: '127.0.0.1', port: sentinel.port }],
    name: 'strata-master',
    stop: async () => {
      await sentinel.stop();
      await master.stop();
    },
  };
}
