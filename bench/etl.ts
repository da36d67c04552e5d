import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags } from './lib.js';

// etl_throughput: MB/s of raw JSONL through normalize + dedup (exact and MinHash near) +
// filter + tokenize (cl100k_base) + Parquet shards, from the job's submission to its `done`,
// on a daemon fed over HTTP; the peer is the tokenizer library alone on the same text (read,
// JSON-parsed and encoded in this process). etl_peak_rss: the daemon's peak resident memory
// (VmHWM) over the upload and the job, beside the input's size — it must not follow it.
// Input: 1 GiB (64 MiB with --quick) of generated rows, about 4 % exact and 2 % near
// duplicates, so the dedup step has real work.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const WORDS = 'storage engine replica primary write ahead log snapshot segment shard token model weights checkpoint cache vector index query latency throughput memory disk network quota billing user conversation message archive backup restore verify promote fence epoch lease'.split(' ');

async function makeInput(path: string, bytes: number): Promise<number> {
  const out = createWriteStream(path);
  let written = 0;
  let i = 0;
  let seed = 42;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  let previous = '';
  while (written < bytes) {
    let text: string;
    const r = rand();
    if (r < 0.04 && previous) text = previous.toUpperCase();
    else if (r < 0.06 && previous) text = previous.replace(/^\w+/, 'changed');
    else text = Array.from({ length: 40 + Math.floor(rand() * 120) }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ') + ` ${i}.`;
    previous = text;
    const line = JSON.stringify({ text, source: 'bench' }) + '\n';
    written += line.length;
    i++;
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return i;
}

function call(base: string, method: string, path: string, token: string, body?: unknown): Promise<any> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      let t = '';
      res.on('data', (c: Buffer) => (t += c.toString()));
      res.on('end', () => resolve(t ? JSON.parse(t) : null));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function upload(base: string, path: string, token: string, file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-length': statSync(file).size } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    createReadStream(file).pipe(req);
  });
}

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

interface Measured {
  rows: number;
  mb: number;
  seconds: number;
  peerSeconds: number;
  tokens: number;
  rss: number;
  stats: any;
}

/** One input size on a fresh daemon: the pipeline job, the tokenizer-alone peer, and the daemon's peak RSS. */
async function measure(dir: string, mib: number): Promise<Measured> {
  const input = join(dir, `input-${mib}.jsonl`);
  const rows = await makeInput(input, mib * 1024 * 1024);
  const mb = statSync(input).size / 1e6;
  try {
    // The peer: the tokenizer alone on the same text.
    let t0 = performance.now();
    let tokens = 0;
    for await (const line of createInterface({ input: createReadStream(input), crlfDelay: Infinity })) tokens += encode((JSON.parse(line) as { text: string }).text).length;
    const peerSeconds = (performance.now() - t0) / 1000;

    const data = join(dir, `data-${mib}`);
    // MALLOC_ARENA_MAX as the systemd unit sets it (deploy/systemd/strata.service).
    const d = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${data}`, '--set', 'backup.enabled=false'], /"url":"(http:\/\/[^"]+)"/, { ...process.env, MALLOC_ARENA_MAX: '2' });
    try {
      const base = d.match;
      const token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
      await call(base, 'POST', '/v1/datasets', token, { name: 'bench' });
      if ((await upload(base, '/v1/datasets/bench/raw/input.jsonl', token, input)) !== 201) throw new Error('upload failed');
      t0 = performance.now();
      const job = await call(base, 'POST', '/v1/datasets/bench/jobs', token, { steps: ['normalize', 'dedup', 'filter', 'tokenize'] });
      let state: any;
      for (;;) {
        await new Promise((r) => setTimeout(r, 100));
        state = await call(base, 'GET', `/v1/jobs/${job.job_id}`, token);
        if (state.state !== 'queued' && state.state !== 'running') break;
      }
      const seconds = (performance.now() - t0) / 1000;
      if (state.state !== 'done') throw new Error(`the job ended ${state.state}: ${state.error}`);
      return { rows, mb, seconds, peerSeconds, tokens, rss: peakRss(d.proc.pid!), stats: state.result.stats };
    } finally {
      await stop(d.proc);
      rmSync(data, { recursive: true, force: true });
    }
  } finally {
    rmSync(input, { force: true });
  }
}

export async function etl(o: BenchOptions): Promise<ResultRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-etl-'));
  const big = Number(process.env.STRATA_BENCH_ETL_MIB) || (o.quick ? 64 : 1024);
  const small = Math.max(1, Math.floor(big / 16));
  try {
    const s = await measure(dir, small);
    const m = await measure(dir, big);
    const st = m.stats;
    const notes = `${m.rows} rows, ${m.mb.toFixed(0)} MB; kept ${st.rows_out}, ${st.duplicates} duplicates (${st.near_duplicates} near), ${st.filtered} filtered, ${st.tokens} tokens (peer counted ${m.tokens}); ${m.seconds.toFixed(1)} s vs ${m.peerSeconds.toFixed(1)} s; ${st.dedup_spills} dedup spills`;
    const mib = (b: number) => Math.round(b / 1048576);
    return [
      row({ name: 'etl_throughput', metric: 'raw JSONL through normalize+dedup+filter+tokenize+Parquet', unit: 'MB/s', value: Math.round((m.mb / m.seconds) * 10) / 10, peer: 'gpt-tokenizer alone on the same text, one core', peer_value: Math.round((m.mb / m.peerSeconds) * 10) / 10, better: 'higher', notes }),
      row({ name: 'etl_peak_rss', metric: `daemon peak RSS over upload and job, ${big} MiB input`, unit: 'MiB', value: mib(m.rss), peer: `the same at ${small} MiB input (flat: ratio near 1)`, peer_value: mib(s.rss), better: 'lower', notes: `VmHWM of the daemon process, a fresh daemon per size; ${small} MiB input ran at ${(s.mb / s.seconds).toFixed(1)} MB/s` }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
