import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { Packr, FLOAT32_OPTIONS } from 'msgpackr';
import usearch, { type BatchMatches } from 'usearch';
import hnswlib from 'hnswlib-node';
import { row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags, freePort } from './lib.js';
import { alternate, hey, wrk } from './load.js';

// vector_query: QPS and p50/p99 over HTTP (64 connections) for N × 768 clustered vectors,
// beside raw usearch and hnswlib-node searching the same data in this process, each with its
// recall@10 against exact search. vector_upsert: vectors/s over HTTP vs raw usearch add.
// vector_memory: bytes per vector held by the daemon's index (f32, f16, i8) vs raw usearch.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const MEMORY_PEER = join(here, 'peers/usearch-memory.js');
const DIMS = 768;
const EF = 128;
const packr = new Packr({ useRecords: false, useFloat32: FLOAT32_OPTIONS.ALWAYS });

function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function clustered(n: number, clusters: number, seed: number) {
  const r = rng(seed);
  const g = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const centres = Array.from({ length: clusters }, () => Float32Array.from({ length: DIMS }, g));
  const data = new Float32Array(n * DIMS);
  for (let i = 0; i < n; i++) {
    const c = centres[i % clusters]!;
    for (let d = 0; d < DIMS; d++) data[i * DIMS + d] = c[d]! + g() * 0.5;
  }
  const queries = Array.from({ length: 200 }, (_, i) => Float32Array.from(centres[(i * 7) % clusters]!, (x) => x + g() * 0.5));
  return { data, queries };
}

function post(base: string, path: string, token: string, body: unknown, msgpack = false): Promise<{ status: number; body: Buffer }> {
  const data = msgpack ? packr.pack(body) : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': msgpack ? 'application/msgpack' : 'application/json', 'content-length': data.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

const recallOf = (found: number[][], truth: number[][]) => found.reduce((s, f, i) => s + f.filter((k) => truth[i]!.includes(k)).length / 10, 0) / found.length;
const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

async function daemon(dir: string, extra: string[] = []) {
  const s = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${dir}`, '--set', 'vectors.max_batch=1000', ...extra], /"url":"(http:\/\/[^"]+)"/);
  return { ...s, token: readFileSync(join(dir, 'admin.token'), 'utf8').trim() };
}

async function upload(base: string, token: string, name: string, data: Float32Array, n: number) {
  for (let i = 0; i < n; i += 1000) {
    const m = Math.min(1000, n - i);
    const vectors = Array.from({ length: m }, (_, j) => ({ id: String(i + j), values: Array.from(data.subarray((i + j) * DIMS, (i + j + 1) * DIMS)) }));
    const r = await post(base, `/v1/collections/${name}/upsert`, token, { vectors }, true);
    if (r.status !== 200) throw new Error(`upsert failed: ${r.status} ${r.body.toString()}`);
  }
}

export async function vectors(opts: BenchOptions): Promise<ResultRow[]> {
  const n = opts.quick ? 20_000 : 100_000;
  const seconds = opts.quick ? 5 : 15;
  const { data, queries } = clustered(n, 100, 42);
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-vec-'));
  const rows: ResultRow[] = [];
  try {
    // Ground truth by exact search.
    const exact = usearch.exactSearch(data, queries.map((q) => q) as unknown as Float32Array[], DIMS, 10, usearch.MetricKind.Cos, 2) as unknown as BatchMatches;
    const truth = queries.map((_, i) => Array.from(exact.get(i).keys, Number));

    // --- Strata over HTTP ---
    const qdrantPort = await freePort();
    const s = await daemon(join(dir, 'strata'), ['--set', `qdrant.listen=127.0.0.1:${qdrantPort}`]);
    await post(s.match, '/v1/collections', s.token, { name: 'bench', dimensions: DIMS, metric: 'cos', expansion_search: EF });
    let t0 = performance.now();
    await upload(s.match, s.token, 'bench', data, n);
    const strataUpsert = n / ((performance.now() - t0) / 1000);
    const strataFound: number[][] = [];
    for (const q of queries) {
      const r = await post(s.match, '/v1/collections/bench/query', s.token, { vector: Array.from(q), top_k: 10 });
      strataFound.push((JSON.parse(r.body.toString()) as { matches: Array<{ id: string }> }).matches.map((m) => Number(m.id)));
    }
    const strataRecall = recallOf(strataFound, truth);
    const bodies = queries.map((q) => JSON.stringify({ vector: Array.from(q), top_k: 10 }));
    const scrape = () => new Promise<string>((resolve) => request(new URL('/metrics', s.match), (res) => { let t = ''; res.on('data', (c: Buffer) => (t += c.toString())); res.on('end', () => resolve(t)); }).end());
    const queryReq = { method: 'POST' as const, headers: { authorization: `Bearer ${s.token}` }, paths: bodies.map(() => '/v1/collections/bench/query'), bodies };
    // Saturation from wrk at 64 connections; latency closed-loop at 4 connections (wrk) and at
    // a fixed 500 queries/s (hey): at 64 connections p50 is mostly queueing (Little's law).
    const load = await wrk(s.match, queryReq, 64, seconds);
    if (load.errors) throw new Error(`vector_query saw ${load.errors} errors`);
    const light = await wrk(s.match, queryReq, 4, seconds);
    const fixed = await hey(`${s.match}/v1/collections/bench/query`, { method: 'POST', headers: queryReq.headers, body: bodies[0] }, 500, seconds);
    if (fixed.errors || light.errors) throw new Error(`vector_query saw errors: ${light.errors} at 4 connections, ${fixed.errors} at 500/s`);
    // qdrant_search: the same queries through the Qdrant-compatible API (what a Qdrant client
    // sends: JSON, api-key) against the native query, alternately on the same daemon.
    const qdrantReq = { method: 'POST' as const, headers: { 'api-key': s.token }, paths: bodies.map(() => '/collections/bench/points/search'), bodies: queries.map((q) => JSON.stringify({ vector: Array.from(q), limit: 10 })) };
    const compat = await alternate(2, () => wrk(`http://127.0.0.1:${qdrantPort}`, qdrantReq, 64, seconds), () => wrk(s.match, queryReq, 64, seconds));
    if (compat.strata.errors || compat.peer.errors) throw new Error(`qdrant_search saw errors: ${compat.strata.errors} / ${compat.peer.errors}`);
    // An upsert stream (ten 1000 × 768 batches, JSON as most clients send it) with a query
    // load beside it: the longest the event loop was held. prom-client resets its lag
    // histogram on every scrape, so the scrape before drops what came earlier.
    await scrape();
    const extra = clustered(10_000, 100, 7).data;
    const beside = wrk(s.match, queryReq, 4, 3);
    for (let b = 0; b < 10; b++) {
      const vectors = Array.from({ length: 1000 }, (_, j) => ({ id: `x${b * 1000 + j}`, values: Array.from(extra.subarray((b * 1000 + j) * DIMS, (b * 1000 + j + 1) * DIMS)) }));
      const r = await post(s.match, '/v1/collections/bench/upsert', s.token, { vectors });
      if (r.status !== 200) throw new Error(`upsert failed: ${r.status} ${r.body.toString()}`);
    }
    await beside;
    const upsertMetrics = await scrape();
    const upsertLagMax = Number(/^nodejs_eventloop_lag_max_seconds (\S+)/m.exec(upsertMetrics)?.[1] ?? NaN) * 1000;
    const metrics = upsertMetrics;
    const lagP99 = Number(/^nodejs_eventloop_lag_p99_seconds (\S+)/m.exec(metrics)?.[1] ?? NaN) * 1000;
    const lagMax = upsertLagMax;
    await stop(s.proc);

    // --- raw usearch, in process ---
    const ix = new usearch.Index({ dimensions: DIMS, metric: usearch.MetricKind.Cos, quantization: usearch.ScalarKind.F32, connectivity: 16, expansion_add: 128, expansion_search: EF, multi: false });
    t0 = performance.now();
    for (let i = 0; i < n; i += 1000) {
      const m = Math.min(1000, n - i);
      ix.add(BigUint64Array.from({ length: m }, (_, j) => BigInt(i + j)), data.subarray(i * DIMS, (i + m) * DIMS), 1);
    }
    const rawUpsert = n / ((performance.now() - t0) / 1000);
    // What one 1000 × 768 batch would hold an event loop for if it were added in place.
    const extraRaw = clustered(1000, 100, 9).data;
    t0 = performance.now();
    ix.add(BigUint64Array.from({ length: 1000 }, (_, j) => BigInt(n + j)), extraRaw, 1);
    const rawAddBlockMs = performance.now() - t0;
    const rawLat: number[] = [];
    const rawFound: number[][] = [];
    const rawDeadline = performance.now() + seconds * 1000;
    for (let i = 0; performance.now() < rawDeadline; i++) {
      const q0 = performance.now();
      const m = ix.search(queries[i % queries.length]!, 10, 1);
      rawLat.push(performance.now() - q0);
      if (i < queries.length) rawFound.push(Array.from(m.keys, Number));
    }

    // --- hnswlib-node, in process ---
    const h = new hnswlib.HierarchicalNSW('cosine', DIMS);
    h.initIndex(n, 16, 128, 42);
    for (let i = 0; i < n; i++) h.addPoint(Array.from(data.subarray(i * DIMS, (i + 1) * DIMS)), i);
    h.setEf(EF);
    const hLat: number[] = [];
    const hFound: number[][] = [];
    const qArrays = queries.map((q) => Array.from(q));
    const hDeadline = performance.now() + seconds * 1000;
    for (let i = 0; performance.now() < hDeadline; i++) {
      const q0 = performance.now();
      const r = h.searchKnn(qArrays[i % qArrays.length]!, 10);
      hLat.push(performance.now() - q0);
      if (i < queries.length) hFound.push(r.neighbors);
    }

    const stat = (lat: number[]) => {
      const sorted = [...lat].sort((a, b) => a - b);
      const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
      return { qps: lat.length / seconds, p50: q(0.5), p99: q(0.99) };
    };
    const raw = stat(rawLat);
    const hn = stat(hLat);
    const notes = `${n} × ${DIMS} clustered, cos, M=16, ef=${EF}; recall@10 strata ${strataRecall.toFixed(3)}, raw usearch ${recallOf(rawFound, truth).toFixed(3)}, hnswlib ${recallOf(hFound, truth).toFixed(3)}; strata over HTTP (wrk), peers one query at a time in process`;
    const r2 = (x: number) => Math.round(x * 100) / 100;
    rows.push(row({ name: 'vector_query', metric: 'throughput', unit: 'queries/s', value: r2(load.perSecond), peer: 'raw usearch in process', peer_value: r2(raw.qps), better: 'higher', notes }));
    rows.push(row({ name: 'vector_query', metric: 'throughput', unit: 'queries/s', value: r2(load.perSecond), peer: 'hnswlib-node in process', peer_value: r2(hn.qps), better: 'higher', notes }));
    rows.push(row({ name: 'vector_query', metric: 'p50 latency at 4 connections', unit: 'ms', value: r2(light.p50ms), peer: 'raw usearch in process', peer_value: r2(raw.p50), better: 'lower', notes: `${notes}; goal p99 < 10 ms` }));
    rows.push(row({ name: 'vector_query', metric: 'p99 latency at 4 connections', unit: 'ms', value: r2(light.p99ms), peer: 'raw usearch in process', peer_value: r2(raw.p99), better: 'lower', notes: `${notes}; goal p99 < 10 ms` }));
    const fixedNotes = `hey at a fixed 500 queries/s for ${seconds} s (20 single-connection processes, staggered), one query; achieved ${Math.round(fixed.achieved)}/s`;
    rows.push(row({ name: 'vector_query', metric: 'p50 latency at 500 q/s', unit: 'ms', value: r2(fixed.p50ms), peer: 'raw usearch in process', peer_value: r2(raw.p50), better: 'lower', notes: fixedNotes }));
    rows.push(row({ name: 'vector_query', metric: 'p99 latency at 500 q/s', unit: 'ms', value: r2(fixed.p99ms), peer: 'raw usearch in process', peer_value: r2(raw.p99), better: 'lower', notes: fixedNotes }));
    rows.push(row({ name: 'vector_query', metric: 'recall@10', unit: 'fraction', value: r2(strataRecall), peer: 'raw usearch in process', peer_value: r2(recallOf(rawFound, truth)), better: 'higher', notes }));
    rows.push(row({ name: 'qdrant_search', metric: 'throughput, 64 connections', unit: 'queries/s', value: r2(compat.strata.perSecond), peer: 'native vector_query, same daemon', peer_value: r2(compat.peer.perSecond), better: 'higher', notes: `POST /collections/bench/points/search {vector, limit: 10} vs POST /v1/collections/bench/query {vector, top_k: 10}, both JSON; wrk, best of 2 alternating runs of ${seconds} s; goal ≥ 0.9` }));
    rows.push(row({ name: 'vector_upsert', metric: 'max event-loop delay during an upsert stream', unit: 'ms', value: r2(upsertLagMax), peer: 'raw usearch add of one 1000 × 768 batch, in place', peer_value: r2(rawAddBlockMs), better: 'lower', notes: `ten JSON batches of 1000 × ${DIMS} with 4 query connections beside them; goal ≤ 20 ms; lag p99 ${lagP99.toFixed(1)} ms, max ${lagMax.toFixed(1)} ms` }));
    rows.push(row({ name: 'vector_upsert', metric: 'throughput', unit: 'vectors/s', value: Math.round(strataUpsert), peer: 'raw usearch add in process (1 thread)', peer_value: Math.round(rawUpsert), better: 'higher', notes: 'Strata: MessagePack batches of 1000 over HTTP, durable (SQLite + change log) and indexed' }));

    // --- memory per vector ---
    const mn = opts.quick ? 10_000 : 50_000;
    for (const dtype of ['f32', 'f16', 'i8'] as const) {
      const ddir = join(dir, `mem-${dtype}`);
      let d = await daemon(ddir);
      await post(d.match, '/v1/collections', d.token, { name: 'm', dimensions: DIMS, metric: 'cos', dtype });
      await upload(d.match, d.token, 'm', data, mn);
      await stop(d.proc);
      // Restart: the index is loaded from its file into a fresh process, so upload buffers
      // do not count. The baseline is a daemon holding an empty collection of the same kind,
      // so the fixed cost of its worker thread (a V8 isolate, ~10 MB) is not spread per vector.
      const empty = await daemon(join(dir, `empty-${dtype}`));
      await post(empty.match, '/v1/collections', empty.token, { name: 'm', dimensions: DIMS, metric: 'cos', dtype });
      await new Promise((r) => setTimeout(r, 500));
      const base = rssOf(empty.proc.pid!);
      await stop(empty.proc);
      d = await daemon(ddir);
      await new Promise((r) => setTimeout(r, 500));
      const perVector = (rssOf(d.proc.pid!) - base) / mn;
      await stop(d.proc);
      const peer = JSON.parse(execFileSync(process.execPath, ['--expose-gc', MEMORY_PEER, String(mn), String(DIMS), dtype], { encoding: 'utf8' })) as { bytes_per_vector: number };
      rows.push(row({ name: 'vector_memory', metric: `bytes per vector (${dtype})`, unit: 'bytes', value: Math.round(perVector), peer: 'raw usearch in a fresh process (RSS growth)', peer_value: Math.round(peer.bytes_per_vector), better: 'lower', notes: `${mn} × ${DIMS}; daemon RSS with the index loaded minus a daemon with the same collection empty` }));
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
