import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { cpus, freemem, platform, release, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';

// Shared pieces of the benchmarks: the result row, a closed-loop HTTP load generator, and
// spawning servers as separate processes so that server and peer are measured alike.

export interface ResultRow {
  name: string;
  metric: string;
  unit: string;
  value: number;
  peer: string;
  peer_value: number;
  /** Strata over peer, oriented so that > 1 means Strata is better. */
  ratio: number;
  better: 'higher' | 'lower';
  notes?: string;
}

export interface BenchOptions {
  quick: boolean;
}

export function row(r: Omit<ResultRow, 'ratio'>): ResultRow {
  const ratio = r.value === r.peer_value ? 1 : r.better === 'higher' ? r.value / r.peer_value : r.peer_value / r.value;
  return { ...r, ratio: Math.round(ratio * 1000) / 1000 };
}

export function machine() {
  const c = cpus();
  return {
    cpus: c.length,
    cpu_model: c[0]?.model ?? 'unknown',
    memory_bytes: totalmem(),
    free_memory_bytes: freemem(),
    os: `${platform()} ${release()}`,
    node: process.version,
  };
}

export interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
}

/**
 * `concurrency` clients each send a request, wait for the answer, and send the next, for
 * `seconds`. `next(i)` builds request i (a unique index across all clients).
 */
export async function closedLoop(
  baseUrl: string,
  concurrency: number,
  seconds: number,
  next: (i: number) => { method: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<LoadResult> {
  const url = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const latencies: number[] = [];
  let counter = 0;
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const r = next(i);
      const t0 = performance.now();
      const req = request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method: r.method,
          path: r.path,
          headers: { ...(r.body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body) } : {}), ...r.headers },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if ((res.statusCode ?? 500) >= 400) errors++;
            latencies.push(performance.now() - t0);
            resolve();
          });
        },
      );
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end(r.body);
    });
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) await one(counter++);
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
  return { requests: latencies.length, errors, seconds: elapsed, perSecond: latencies.length / elapsed, p50ms: q(0.5), p99ms: q(0.99) };
}

/** How to get each outside program a benchmark runs (Debian package names). */
const INSTALL: Record<string, string> = {
  'redis-server': 'apt-get install redis-server',
  wrk: 'apt-get install wrk',
  hey: 'apt-get install hey',
  etcd: 'apt-get install etcd-server',
  curl: 'apt-get install curl',
};

/** Fails at once, saying what to install, when a program a benchmark needs is missing. */
export function requireTools(...cmds: string[]): void {
  const path = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  const missing = cmds.filter((cmd) => !path.some((dir) => existsSync(join(dir, cmd))));
  if (missing.length) throw new Error(`the benchmarks need ${missing.join(', ')}: ${missing.map((m) => INSTALL[m] ?? `install ${m}`).join('; ')}`);
}

/** Spawns a process and resolves once its output matches `ready`, with the first capture group and the output so far. */
export function spawnUntil(cmd: string, args: string[], ready: RegExp, env: NodeJS.ProcessEnv = process.env): Promise<{ proc: ChildProcess; match: string; output: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    // A server that never says it is ready must fail the run, not hang it.
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${cmd} was not ready after 30 s:\n${out}`));
    }, 30_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.stdout!.off('data', onData);
        proc.stdout!.resume();
        proc.stderr!.resume();
        resolve({ proc, match: m[1] ?? m[0], output: out });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    proc.once('exit', (code) => reject(new Error(`${cmd} exited with ${code} before it was ready:\n${out}`)));
    // A missing program is an 'error' event; without a listener it ended the whole run.
    proc.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err.code === 'ENOENT' ? new Error(`${cmd} is not installed (or not on PATH)${INSTALL[cmd] ? `: ${INSTALL[cmd]}` : ''}`) : err);
    });
  });
}

export async function stop(proc: ChildProcess): Promise<void> {
  // A process killed by a signal has no exit code, only a signalCode.
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

/**
 * Node's flags for a daemon the benchmarks start: `npm run profile` sets STRATA_PROFILE_DIR and
 * every daemon then writes a CPU profile there when it stops.
 */
export function daemonFlags(): string[] {
  const dir = process.env.STRATA_PROFILE_DIR;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

/** A TCP port free right now on 127.0.0.1 (for a server that does not log the one it got). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once GET {base}/healthz answers 200; fails after 30 s. */
export async function untilHealthy(base: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await fetch(`${base}/healthz`);
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${base} was not healthy after 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Bytes of the files under a directory, recursively. */
export function duSize(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    total += e.isDirectory() ? duSize(p) : statSync(p).size;
  }
  return total;
}
