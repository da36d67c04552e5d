import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnUntil, stop } from './lib.js';

// The soak test: one daemon under mixed traffic for a while — conversation appends and reads,
// usage records, vector queries, model downloads and uploads, and a share of deliberately bad
// requests — with the daemon's RSS sampled every 5 s. It passes when no request failed except
// the bad ones (which must all get a 4xx) and the RSS of the last third grew by less than a
// tenth over the middle third (it levels off rather than climbing with the request count).
//
//   npm run soak                 10 minutes (the documented run)
//   npm run soak -- --quick      1 minute
//   npm run soak -- --seconds=N

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');

type Kind = 'append' | 'read' | 'usage' | 'vector_query' | 'model_download' | 'model_upload' | 'bad_input';
const WEIGHTS: Array<[Kind, number]> = [
  ['append', 30],
  ['read', 25],
  ['usage', 15],
  ['vector_query', 15],
  ['model_download', 7],
  ['model_upload', 3],
  ['bad_input', 5],
];
const CONCURRENCY = 16;

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const seconds = Number(process.argv.find((a) => a.startsWith('--seconds='))?.slice(10) ?? (quick ? 60 : 600));
  const dir = mkdtempSync(join(tmpdir(), 'strata-soak-'));
  const d = await spawnUntil(process.execPath, [CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'data')}`], /"url":"(http:\/\/[^"]+)"/);
  const base = d.match;
  const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
  const h = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const call = async (method: string, path: string, body?: unknown, extra: Record<string, string> = {}) => {
    const res = await fetch(base + path, { method, headers: { ...h, ...extra }, body: body === undefined ? undefined : typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body) });
    const buf = new Uint8Array(await res.arrayBuffer());
    return { status: res.status, body: buf };
  };
  const json = (b: Uint8Array) => JSON.parse(Buffer.from(b).toString()) as any;
  try {
    // Setup: users, conversations, a collection, a model with one file.
    const users = Array.from({ length: 50 }, (_, i) => `soak-${i}`);
    for (const u of users) await call('POST', '/v1/users', { id: u, email: `${u}@example.com`, tier: 'enterprise' });
    const convs: string[] = [];
    for (let i = 0; i < 200; i++) convs.push(json((await call('POST', '/v1/conversations', { user_id: users[i % users.length] })).body).id);
    await call('POST', '/v1/collections', { name: 'soak', dimensions: 128, metric: 'cos' });
    const vec = () => Array.from({ length: 128 }, () => Math.random() - 0.5);
    for (let b = 0; b < 10; b++) await call('POST', '/v1/collections/soak/upsert', { vectors: Array.from({ length: 200 }, (_, i) => ({ id: `v${b * 200 + i}`, values: vec(), metadata: { group: i % 10 } })) });
    await call('PUT', '/v1/models/soak', {});
    await call('POST', '/v1/models/soak/versions', { version: 'v0' });
    const weights = randomBytes(4 * 1024 * 1024);
    await call('PUT', '/v1/models/soak/versions/v0/files/w.bin', weights, { 'content-type': 'application/octet-stream', 'x-content-sha256': createHash('sha256').update(weights).digest('hex') });
    let uploads = 0;

    const total = WEIGHTS.reduce((s, [, w]) => s + w, 0);
    const pick = (): Kind => {
      let r = Math.random() * total;
      for (const [k, w] of WEIGHTS) if ((r -= w) < 0) return k;
      return 'append';
    };
    const stats = new Map<Kind, { latencies: number[]; errors: number; samples: string[] }>(WEIGHTS.map(([k]) => [k, { latencies: [], errors: 0, samples: [] }]));
    const one = async (kind: Kind): Promise<boolean> => {
      const conv = convs[Math.floor(Math.random() * convs.length)]!;
      switch (kind) {
        case 'append':
          return (await call('POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: 'soak message '.repeat(10), tokens: 20 })).status === 201;
        case 'read':
          return (await call('GET', `/v1/conversations/${conv}/messages?last=50`)).status === 200;
        case 'usage':
          return (await call('POST', '/v1/usage', { user_id: users[Math.floor(Math.random() * users.length)], model: 'm', input_tokens: 10, output_tokens: 20 })).status === 200;
        case 'vector_query':
          return (await call('POST', '/v1/collections/soak/query', { vector: vec(), top_k: 10, ...(Math.random() < 0.3 ? { filter: { group: 3 } } : {}) })).status === 200;
        case 'model_download': {
          const r = await call('GET', '/v1/models/soak/versions/v0/files/w.bin', undefined, Math.random() < 0.5 ? { range: 'bytes=1000-500999' } : {});
          return r.status === 200 || r.status === 206;
        }
        case 'model_upload': {
          const v = `u${++uploads}`;
          if ((await call('POST', '/v1/models/soak/versions', { version: v })).status !== 201) return false;
          const data = randomBytes(256 * 1024);
          return (await call('PUT', `/v1/models/soak/versions/${v}/files/w.bin`, data, { 'content-type': 'application/octet-stream', 'x-content-sha256': createHash('sha256').update(data).digest('hex') })).status === 201;
        }
        case 'bad_input': {
          const bad = [
            () => call('POST', '/v1/users', '{"id": broken'),
            () => call('POST', `/v1/conversations/${conv}/messages`, { role: 'robot', content: 1 }),
            () => call('POST', '/v1/collections/soak/query', { vector: [1, 2], top_k: 10 }),
            () => call('GET', '/v1/users/soak-1', undefined, { authorization: 'Bearer not-a-token' }),
            () => call('PUT', '/v1/users/soak-1/preferences', '['.repeat(500) + ']'.repeat(500)),
          ][Math.floor(Math.random() * 5)]!;
          const r = await bad();
          return r.status >= 400 && r.status < 500;
        }
      }
    };
    const samples: Array<{ t: number; rss: number }> = [{ t: 0, rss: rss(d.proc.pid!) }];
    const started = performance.now();
    const sampler = setInterval(() => samples.push({ t: (performance.now() - started) / 1000, rss: rss(d.proc.pid!) }), 5000);
    const deadline = started + seconds * 1000;
    let lastReport = started;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < deadline) {
          const kind = pick();
          const s = stats.get(kind)!;
          const t0 = performance.now();
          let ok = false;
          try {
            ok = await one(kind);
          } catch (err) {
            if (s.samples.length < 3) s.samples.push((err as Error).message);
          }
          s.latencies.push(performance.now() - t0);
          if (!ok) s.errors++;
          if (performance.now() - lastReport > 30_000) {
            lastReport = performance.now();
            const done = [...stats.values()].reduce((n, x) => n + x.latencies.length, 0);
            process.stderr.write(`soak: ${Math.round((lastReport - started) / 1000)} s, ${done} requests, RSS ${Math.round(rss(d.proc.pid!) / 1048576)} MiB\n`);
          }
        }
      }),
    );
    clearInterval(sampler);
    samples.push({ t: (performance.now() - started) / 1000, rss: rss(d.proc.pid!) });
    const third = Math.floor(samples.length / 3);
    const middle = samples.slice(third, 2 * third);
    const last = samples.slice(2 * third);
    const maxOf = (xs: typeof samples) => Math.max(...xs.map((x) => x.rss));
    const growth = (maxOf(last) - maxOf(middle)) / maxOf(middle);
    const kinds = [...stats].map(([kind, s]) => {
      const sorted = [...s.latencies].sort((a, b) => a - b);
      return { kind, requests: s.latencies.length, failures: s.errors, p50_ms: Math.round(percentile(sorted, 50) * 10) / 10, p99_ms: Math.round(percentile(sorted, 99) * 10) / 10, ...(s.samples.length ? { errors_seen: s.samples } : {}) };
    });
    const errors = kinds.filter((k) => k.kind !== 'bad_input').reduce((n, k) => n + k.failures, 0);
    const badAnswered = kinds.find((k) => k.kind === 'bad_input')!;
    const report = {
      date: new Date().toISOString(),
      seconds,
      concurrency: CONCURRENCY,
      requests: kinds.reduce((n, k) => n + k.requests, 0),
      errors,
      bad_input_not_4xx: badAnswered.failures,
      kinds,
      rss_mib: { start: Math.round(samples[0]!.rss / 1048576), end: Math.round(samples[samples.length - 1]!.rss / 1048576), max_middle_third: Math.round(maxOf(middle) / 1048576), max_last_third: Math.round(maxOf(last) / 1048576), growth_last_vs_middle: Math.round(growth * 1000) / 1000 },
      passed: errors === 0 && badAnswered.failures === 0 && growth < 0.1,
    };
    const out = fileURLToPath(new URL('../../bench/results/', import.meta.url));
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'soak.json'), JSON.stringify(report, null, 2) + '\n');
    console.log(`| kind | requests | failures | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- |`);
    for (const k of kinds) console.log(`| ${k.kind} | ${k.requests} | ${k.failures} | ${k.p50_ms} | ${k.p99_ms} |`);
    console.log(`\n${report.requests} requests in ${seconds} s, ${errors} errors (bad input answered 4xx: ${badAnswered.requests - badAnswered.failures}/${badAnswered.requests}); RSS ${report.rss_mib.start} → ${report.rss_mib.end} MiB (last third vs middle third: ${(growth * 100).toFixed(1)} %) — ${report.passed ? 'PASSED' : 'FAILED'}`);
    if (!report.passed) process.exitCode = 1;
  } finally {
    await stop(d.proc);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
