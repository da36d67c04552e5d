import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

// Spawns the built daemon (dist/) as a real process, the way systemd would, and gives tests
// its URL, its admin token and ways to stop it gracefully or with kill -9.

export const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/src/daemon/cli.js');

export type Runtime = 'node' | 'bun' | 'deno';

export interface Daemon {
  url: string;
  dataDir: string;
  adminToken: string;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait for exit; resolves to the exit code. */
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

export function tempDir(prefix = 'strata-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function runtimeCommand(runtime: Runtime): string[] {
  switch (runtime) {
    case 'node':
      return [process.execPath];
    case 'bun':
      return [join(ROOT, 'node_modules/.bin/bun')];
    case 'deno':
      return [join(ROOT, 'node_modules/.bin/deno'), 'run', '-A', '--node-modules-dir=manual'];
  }
}

export async function startDaemon(options: { dataDir?: string; runtime?: Runtime; set?: string[] } = {}): Promise<Daemon> {
  const dataDir = options.dataDir ?? tempDir();
  const [cmd, ...pre] = runtimeCommand(options.runtime ?? 'node');
  const args = [
    ...pre,
    CLI,
    'serve',
    '--set',
    'server.listen=127.0.0.1:0',
    '--set',
    `storage.data_dir=${dataDir}`,
    '--set',
    'server.shutdown_timeout_seconds=10',
    ...(options.set ?? []).flatMap((s) => ['--set', s]),
  ];
  const proc = spawn(cmd!, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const sent = new Set<string>();
  const kill = proc.kill.bind(proc);
  proc.kill = (signal?: NodeJS.Signals | number) => {
    sent.add(String(signal ?? 'SIGTERM'));
    return kill(signal);
  };
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start in time:\n${out}`)), 30_000);
    const check = () => {
      const m = /"url":"(https?:\/\/[^"]+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]!);
      }
    };
    proc.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code} before listening:\n${out}`));
    });
  });
  const adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  return {
    url,
    dataDir,
    adminToken,
    proc,
    output: () => out,
    async stop() {
      // Not proc.killed: it turns true after any signal, SIGSTOP/SIGCONT included. A second
      // SIGTERM would make the daemon stop waiting for its in-flight requests.
      if (proc.exitCode === null && proc.signalCode === null && !sent.has('SIGTERM') && !sent.has('SIGKILL')) proc.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Runs the CLI without blocking this process (a daemon it talks to, started by the same test,
 * keeps being served) and collects its output.
 */
export function runCli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, [CLI, ...args]);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolveRun({ code, out, err }));
  });
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export async function api(
  d: { url: string; adminToken: string },
  method: string,
  path: string,
  body?: unknown,
  token: string | null = d.adminToken,
): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(d.url + path, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, headers: res.headers };
}
