import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'minio';
import { row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags } from './lib.js';

// model_upload, model_download_hit, model_download_miss — each beside a peer in the same run.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const PEER = join(here, 'peers/file-http-server.js');
const MiB = 1024 * 1024;

/** Sends `size` bytes of one random 1 MiB block repeated; resolves to seconds taken. */
function upload(url: string, headers: Record<string, string>, size: number): Promise<number> {
  const block = randomBytes(MiB);
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { ...headers, 'content-length': size } }, (res) => {
      res.resume();
      res.on('end', () => ((res.statusCode ?? 500) < 300 ? resolve((performance.now() - t0) / 1000) : reject(new Error(`upload answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    let sent = 0;
    const pump = () => {
      while (sent < size) {
        const n = Math.min(MiB, size - sent);
        sent += n;
        if (!req.write(n === MiB ? block : block.subarray(0, n))) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

/** GETs a URL with curl (a native client: the Node client below is slow enough to hide the server's cost) and discards the body; bytes/s. */
function curlDownload(url: string, headers: Record<string, string>): number {
  const args = ['-s', '-f', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url];
  const out = execFileSync('curl', args, { encoding: 'utf8' }).trim().split(' ');
  return Number(out[0]) / Number(out[1]);
}

/** GETs a URL and discards the body; resolves to bytes/s. */
function download(url: string, headers: Record<string, string>): Promise<number> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let bytes = 0;
    request({ host: u.hostname, port: u.port, path: u.pathname, headers }, (res) => {
      if ((res.statusCode ?? 500) >= 300) reject(new Error(`download answered ${res.statusCode}`));
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve(bytes / ((performance.now() - t0) / 1000)));
    })
      .on('error', reject)
      .end();
  });
}

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const best = (xs: number[]) => Math.max(...xs);
const mbps = (bytesPerSecond: number) => Math.round((bytesPerSecond / MiB) * 10) / 10;

export async function models(opts: BenchOptions): Promise<ResultRow[]> {
  const size = opts.quick ? 256 * MiB : 1024 * MiB;
  const rounds = opts.quick ? 2 : 3;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-models-'));
  const rows: ResultRow[] = [];
  try {
    // --- fs tier: upload and cache-hit download -------------------------------------------
    const strata = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'a')}`], /"url":"(http:\/\/[^"]+)"/);
    const token = readFileSync(join(dir, 'a', 'admin.token'), 'utf8').trim();
    const h = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const json = (method: string, path: string, body: unknown) => fetch(strata.match + path, { method, headers: h, body: JSON.stringify(body) });
    await json('PUT', '/v1/models/bench', {});
    await json('POST', '/v1/models/bench/versions', { version: 'v1' });
    const upSeconds: number[] = [];
    for (let i = 0; i < rounds; i++) upSeconds.push(await upload(`${strata.match}/v1/models/bench/versions/v1/files/w${i}.bin`, { authorization: h.authorization }, size));
    const rss = peakRss(strata.proc.pid!);
    const fileUrl = `${strata.match}/v1/models/bench/versions/v1/files/w0.bin`;
    await download(fileUrl, { authorization: h.authorization }); // the miss that fills the cache
    const hit: number[] = [];
    for (let i = 0; i < rounds; i++) hit.push(await download(fileUrl, { authorization: h.authorization }));
    // Three in a row with curl, the file in the page cache (read just above).
    const hitCurl: number[] = [];
    for (let i = 0; i < 3; i++) hitCurl.push(curlDownload(fileUrl, { authorization: h.authorization }));
    await stop(strata.proc);

    const peer = await spawnUntil(process.execPath, [PEER, dir], /listening (http:\/\/\S+)/);
    const peerUp: number[] = [];
    for (let i = 0; i < rounds; i++) peerUp.push(await upload(`${peer.match}/file.bin`, {}, size));
    const peerHit: number[] = [];
    for (let i = 0; i < rounds; i++) peerHit.push(await download(`${peer.match}/file.bin`, {}));
    const peerCurl: number[] = [];
    for (let i = 0; i < 3; i++) peerCurl.push(curlDownload(`${peer.match}/file.bin?read=1m`, {}));
    await stop(peer.proc);

    const notes = `${size / MiB} MiB file, best of ${rounds}`;
    rows.push(row({ name: 'model_upload', metric: 'throughput', unit: 'MiB/s', value: mbps(size / Math.min(...upSeconds)), peer: 'node:http piping to a file + fsync', peer_value: mbps(size / Math.min(...peerUp)), better: 'higher', notes: `${notes}; sha256 on the stream, fsync, rename, registry commit` }));
    rows.push(row({ name: 'model_upload', metric: 'peak RSS of the daemon', unit: 'MiB', value: mbps(rss), peer: 'upload size', peer_value: size / MiB, better: 'lower', notes: 'bounded memory: RSS stays far below the file size' }));
    rows.push(row({ name: 'model_download_hit', metric: 'throughput', unit: 'MiB/s', value: mbps(best(hit)), peer: 'node:http file server (createReadStream pipe)', peer_value: mbps(best(peerHit)), better: 'higher', notes }));
    rows.push(row({ name: 'model_download_hit', metric: 'throughput, curl', unit: 'MiB/s', value: mbps(best(hitCurl)), peer: 'node:http file server, 1 MiB reads, curl', peer_value: mbps(best(peerCurl)), better: 'higher', notes: `${size / MiB} MiB file in the page cache, best of 3 curl runs in a row; goal ≥ 0.9 (issue 19)` }));

    // --- s3 tier (s3rver): cold read through the cache vs a direct minio GET ---------------
    // s3rver in its own process (bench/s3rver-server.ts): the daemon's fill and the direct GET
    // then both meet a server with a thread of its own.
    const s3 = await spawnUntil(process.execPath, [join(here, 's3rver-server.js'), join(dir, 's3'), 'bench-hot'], /s3rver port (\d+)/);
    const port = Number(s3.match);
    try {
      const s3Sets = ['driver=s3', 'endpoint=127.0.0.1', `port=${port}`, 'use_ssl=false', 'bucket=bench-hot', 'access_key=S3RVER', 'secret_key=S3RVER'].flatMap((kv) => ['--set', `objects.hot.${kv}`]);
      const missSize = opts.quick ? 64 * MiB : 256 * MiB;
      // The same cold reads with the fill's ranged GETs (the default, 4 × 8 MiB) and with one GET.
      const coldReads = async (gets: number, tag: string): Promise<number[]> => {
        const data = join(dir, `b-${tag}`);
        const cold = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${data}`, '--set', `models.cache.fill_parallel_gets=${gets}`, ...s3Sets], /"url":"(http:\/\/[^"]+)"/);
        try {
          const t2 = readFileSync(join(data, 'admin.token'), 'utf8').trim();
          const h2 = { authorization: `Bearer ${t2}`, 'content-type': 'application/json' };
          await fetch(cold.match + `/v1/models/bench-${tag}`, { method: 'PUT', headers: h2, body: '{}' });
          await fetch(cold.match + `/v1/models/bench-${tag}/versions`, { method: 'POST', headers: h2, body: '{"version":"v1"}' });
          const out: number[] = [];
          for (let i = 0; i < rounds; i++) {
            // A size of its own per file and per daemon: every read is a miss, never a dedupe hit.
            await upload(`${cold.match}/v1/models/bench-${tag}/versions/v1/files/m${i}.bin`, { authorization: h2.authorization }, missSize + i + (gets === 1 ? 1000 : 0));
            out.push(await download(`${cold.match}/v1/models/bench-${tag}/versions/v1/files/m${i}.bin`, { authorization: h2.authorization }));
          }
          return out;
        } finally {
          await stop(cold.proc);
        }
      };
      const miss = await coldReads(4, 'ranged');
      const missOne = await coldReads(1, 'one');
      const client = new Client({ endPoint: '127.0.0.1', port, useSSL: false, accessKey: 'S3RVER', secretKey: 'S3RVER', pathStyle: true, region: 'us-east-1' });
      const keys: string[] = [];
      for await (const o of client.listObjectsV2('bench-hot', 'blobs/', true) as AsyncIterable<{ name: string }>) keys.push(o.name);
      const direct: number[] = [];
      for (const key of keys.slice(0, rounds)) {
        const t0 = performance.now();
        let bytes = 0;
        for await (const c of await client.getObject('bench-hot', key)) bytes += (c as Buffer).length;
        direct.push(bytes / ((performance.now() - t0) / 1000));
      }
      rows.push(row({ name: 'model_download_miss', metric: 'throughput', unit: 'MiB/s', value: mbps(best(miss)), peer: 'minio client getObject from the same s3rver', peer_value: mbps(best(direct)), better: 'higher', notes: `${missSize / MiB} MiB, cold: 4 ranged GETs of 8 MiB at once, verify sha256, fill the cache, serve while filling; s3rver in its own process; goal ≥ 0.8` }));
      rows.push(row({ name: 'model_download_miss', metric: 'throughput, one GET per fill', unit: 'MiB/s', value: mbps(best(missOne)), peer: 'minio client getObject from the same s3rver', peer_value: mbps(best(direct)), better: 'higher', notes: `models.cache.fill_parallel_gets=1, for comparison` }));
    } finally {
      await stop(s3.proc);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
