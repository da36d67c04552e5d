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

export async function etl(o: BenchOptions): Promise<ResultRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-etl-'));
  const bytes = (Number(process.env.STRATA_BENCH_ETL_MIB) || (o.quick ? 64 : 1024)) * 1024 * 1024;
  try {
    const input = join(dir, 'input.jsonl');
    const rows = await makeInput(input, bytes);
    const size = statSync(input).size;
    const mb = size / 1e6;

    // The peer: the tokenizer alone on the same text.
    let t0 = performance.now();
    let tokens = 0;
    for await (const line of createInterface({ input: createReadStream(input), crlfDelay: Infinity })) tokens += encode((JSON.parse(line) as { text: string }).text).length;
    const peerSeconds = (performance.now() - t0) / 1000;

    const d = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'data')}`, '--set', 'backup.enabled=false'], /"url":"(http:\/\/[^"]+)"/);
    try {
      const base = d.match;
      const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
      await call(base, 'POST', '/v1/datasets', token, { name: 'bench' });
      if ((await upload(base, '/v1/datasets/bench/raw/input.jsonl', token, input)) !== 201) throw new Error('upload failed');
      t0 = performance.now();
      const job = await call(base, 'POST', '/v1/datasets/bench/jobs', token, { steps: ['normalize', 'dedup', 'filter', 'tokenize'] });
      let state: any;
      for (;;) {
        await new Promise((r) => setTimeout(r, 500));
        state = await call(base, 'GET', `/v1/jobs/${job.job_id}`, token);
        if (state.state !== 'queued' && state.state !== 'running') break;
      }
      const seconds = (performance.now() - t0) / 1000;
      if (state.state !== 'done') throw new Error(`the job ended ${state.state}: ${state.error}`);
      const rss = peakRss(d.proc.pid!);
      const stats = state.result.stats;
      const notes = `${rows} rows, ${(mb).toFixed(0)} MB; kept ${stats.rows_out}, ${stats.duplicates} duplicates (${stats.near_duplicates} near), ${stats.filtered} filtered, ${stats.tokens} tokens (peer counted ${tokens}); ${seconds.toFixed(1)} s vs ${peerSeconds.toFixed(1)} s`;
      return [
        row({ name: 'etl_throughput', metric: 'raw JSONL through normalize+dedup+filter+tokenize+Parquet', unit: 'MB/s', value: Math.round((mb / seconds) * 10) / 10, peer: 'gpt-tokenizer alone on the same text', peer_value: Math.round((mb / peerSeconds) * 10) / 10, better: 'higher', notes }),
        row({ name: 'etl_peak_rss', metric: 'daemon peak RSS over upload and job', unit: 'MiB', value: Math.round(rss / 1048576), peer: 'input size (a reference, not a peer)', peer_value: Math.round(size / 1048576), better: 'lower', notes: 'VmHWM of the daemon process' }),
      ];
    } finally {
      await stop(d.proc);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
