import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Load from native generators, so that the generator is not what is measured: on these two
// cores a Node closed-loop client topped out near 15k req/s by itself and compressed every
// ratio. Saturation comes from wrk (one thread, keep-alive connections, a Lua script when
// requests vary); latency at a fixed offered rate from hey (-q per worker), because latency at
// saturation is only queueing.

export interface Saturation {
  perSecond: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

export interface LoadRequest {
  method?: 'GET' | 'POST' | 'PUT';
  headers?: Record<string, string>;
  /** Paths (and bodies) cycled through in order: request i uses entry i mod length. */
  paths: string[];
  bodies?: string[];
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} failed: ${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

const luaString = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

/** wrk at `connections` keep-alive connections for `seconds`. */
export async function wrk(base: string, req: LoadRequest, connections: number, seconds: number): Promise<Saturation> {
  const dir = mkdtempSync(join(tmpdir(), 'strata-wrk-'));
  try {
    const script = join(dir, 'requests.lua');
    const headers = Object.entries({ ...(req.headers ?? {}), ...(req.bodies ? { 'Content-Type': 'application/json' } : {}) })
      .map(([k, v]) => `wrk.headers[${luaString(k)}] = ${luaString(v)}`)
      .join('\n');
    writeFileSync(
      script,
      `${headers}
local paths = { ${req.paths.map(luaString).join(', ')} }
local bodies = { ${(req.bodies ?? []).map(luaString).join(', ')} }
local i = 0
request = function()
  i = i + 1
  local n = (i % #paths) + 1
  return wrk.format(${luaString(req.method ?? 'GET')}, paths[n], nil, bodies[n])
end
`,
    );
    const out = await run('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-s', script, base]);
    const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
    const ms = (re: RegExp) => {
      const m = re.exec(out);
      if (!m) return NaN;
      const v = Number(m[1]);
      return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
    };
    return {
      perSecond: num(/Requests\/sec:\s+([\d.]+)/),
      p50ms: ms(/\s50%\s+([\d.]+)(us|ms|s)/),
      p99ms: ms(/\s99%\s+([\d.]+)(us|ms|s)/),
      errors: num(/Non-2xx or 3xx responses:\s+(\d+)/) || 0,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface FixedRate {
  offered: number;
  achieved: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

/**
 * A fixed offered rate from hey: `workers` hey processes of one connection each, every one at
 * rate/workers req/s, started evenly spread over one period. One hey with -c workers -q starts
 * all its workers' tickers together, so requests arrived in bursts of `workers` at once and
 * p50 measured the burst's queue (13 ms for a 1 ms vector query at 500/s). Latencies come from
 * every request's own line (-o csv), pooled.
 */
export async function hey(url: string, req: { method?: string; headers?: Record<string, string>; body?: string }, rate: number, seconds: number, workers = 20): Promise<FixedRate> {
  const args = ['-z', `${seconds}s`, '-c', '1', '-q', String(rate / workers), '-m', req.method ?? 'GET', '-o', 'csv'];
  for (const [k, v] of Object.entries(req.headers ?? {})) args.push('-H', `${k}: ${v}`);
  // A long body (a 768-float query) goes through a file, not the command line.
  const dir = mkdtempSync(join(tmpdir(), 'strata-hey-'));
  try {
    if (req.body !== undefined) {
      writeFileSync(join(dir, 'body'), req.body);
      args.push('-T', 'application/json', '-D', join(dir, 'body'));
    }
    const periodMs = (1000 * workers) / rate;
    const outs = await Promise.all(
      Array.from({ length: workers }, (_, i) => new Promise<void>((resolve) => setTimeout(resolve, (i * periodMs) / workers)).then(() => run('hey', [...args, url]))),
    );
    const latencies: number[] = [];
    let errors = 0;
    for (const out of outs) {
      for (const line of out.split('\n').slice(1)) {
        const cols = line.split(',');
        if (cols.length < 7) continue;
        if (!cols[6]!.startsWith('2')) errors++;
        latencies.push(Number(cols[0]) * 1000);
      }
    }
    latencies.sort((a, b) => a - b);
    const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
    return { offered: rate, achieved: latencies.length / seconds, p50ms: q(0.5), p99ms: q(0.99), errors };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs `measure` on Strata and on its peer alternately, `rounds` times, and keeps the best of
 * each (highest rate; its latencies with it): the machine is shared, and a burst of someone
 * else's work should cost a round, not a row.
 */
export async function alternate<T extends { perSecond: number }>(rounds: number, strata: () => Promise<T>, peer: () => Promise<T>): Promise<{ strata: T; peer: T }> {
  let best: { strata?: T; peer?: T } = {};
  for (let i = 0; i < rounds; i++) {
    const s = await strata();
    const p = await peer();
    if (!best.strata || s.perSecond > best.strata.perSecond) best = { ...best, strata: s };
    if (!best.peer || p.perSecond > best.peer.perSecond) best = { ...best, peer: p };
  }
  return { strata: best.strata!, peer: best.peer! };
}
