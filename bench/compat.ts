import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { CopyObjectCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { daemonFlags, freePort, row, spawnUntil, stop, type BenchOptions, type ResultRow } from './lib.js';

// s3_get, s3_put and hf_resolve (issue 17): the S3 endpoint driven by @aws-sdk/client-s3, and
// the Hugging Face mirror's resolve, against the native API on the same daemon, same file,
// same run. hf_resolve: GET …/hf/{repo}/resolve/{rev}/{path} vs the native download, both by fetch. s3_get: a cache hit read whole through
// GetObject vs the native download read by fetch (both Node clients, both streams consumed).
// s3_put: a multipart upload through @aws-sdk/lib-storage (16 MiB parts, 4 at a time) vs one
// streamed native PUT of the same bytes.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const MiB = 1024 * 1024;

/** The same 1 MiB block, `size` bytes in all, as a stream. */
function body(size: number): Readable {
  const block = randomBytes(MiB);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(MiB, size - sent);
      sent += n;
      this.push(n === MiB ? block : block.subarray(0, n));
    },
  });
}

async function consume(stream: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const c of stream) bytes += c.byteLength;
  return bytes;
}

export async function compat(opts: BenchOptions): Promise<ResultRow[]> {
  const size = (opts.quick ? 256 : 1024) * MiB;
  const runs = 3;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-s3-'));
  const s3Port = await freePort();
  const d = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${dir}`, '--set', `s3.listen=127.0.0.1:${s3Port}`, '--set', 'backup.enabled=false'], /"url":"(http:\/\/[^"]+)"/);
  try {
    const base = d.match;
    const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    const auth = { authorization: `Bearer ${token}` };
    const created = (await (await fetch(`${base}/v1/admin/tokens`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bench', role: 'service', s3: true }) })).json()) as { s3: { access_key_id: string; secret_access_key: string } };
    const client = new S3Client({ endpoint: `http://127.0.0.1:${s3Port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: created.s3.access_key_id, secretAccessKey: created.s3.secret_access_key } });
    await fetch(`${base}/v1/models/bench--hf`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' });
    await fetch(`${base}/v1/models/bench`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' });

    // Uploads, alternating so that noise hits both: native PUT, then S3 multipart, per run.
    const native: number[] = [];
    const viaS3: number[] = [];
    for (let i = 0; i < runs; i++) {
      await fetch(`${base}/v1/models/bench/versions`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ version: `n${i}` }) });
      let t0 = performance.now();
      const res = await fetch(`${base}/v1/models/bench/versions/n${i}/files/w.bin`, { method: 'PUT', headers: auth, body: Readable.toWeb(body(size)) as ReadableStream, duplex: 'half' } as RequestInit);
      if (res.status !== 201) throw new Error(`native upload answered ${res.status}`);
      native.push(size / MiB / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      await new Upload({ client, params: { Bucket: 'models', Key: `bench/s${i}/w.bin`, Body: body(size) }, partSize: 16 * MiB, queueSize: 4 }).done();
      viaS3.push(size / MiB / ((performance.now() - t0) / 1000));
    }

    // Reads of one file, warm in the model cache and the page cache: native, then S3, per run.
    const readNative: number[] = [];
    const readS3: number[] = [];
    await consume((await fetch(`${base}/v1/models/bench/versions/n0/files/w.bin`, { headers: auth })).body as unknown as AsyncIterable<Uint8Array>);
    for (let i = 0; i < runs; i++) {
      let t0 = performance.now();
      const n = await consume((await fetch(`${base}/v1/models/bench/versions/n0/files/w.bin`, { headers: auth })).body as unknown as AsyncIterable<Uint8Array>);
      if (n !== size) throw new Error(`native read ${n} bytes`);
      readNative.push(size / MiB / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      const got = await client.send(new GetObjectCommand({ Bucket: 'models', Key: 'bench/n0/w.bin' }));
      const m = await consume(got.Body as AsyncIterable<Uint8Array>);
      if (m !== size) throw new Error(`S3 read ${m} bytes`);
      readS3.push(size / MiB / ((performance.now() - t0) / 1000));
    }
    // The mirror serves the model bench--hf as acme-style repo bench/hf; same bytes as n0.
    await fetch(`${base}/v1/models/bench--hf/versions`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ version: 'v1' }) });
    await client.send(new CopyObjectCommand({ Bucket: 'models', Key: 'bench--hf/v1/w.bin', CopySource: 'models/bench/n0/w.bin' }));
    const readHf: number[] = [];
    const readNative2: number[] = [];
    for (let i = 0; i < runs; i++) {
      let t0 = performance.now();
      await consume((await fetch(`${base}/v1/models/bench/versions/n0/files/w.bin`, { headers: auth })).body as unknown as AsyncIterable<Uint8Array>);
      readNative2.push(size / MiB / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      const n = await consume((await fetch(`${base}/hf/bench/hf/resolve/v1/w.bin`, { headers: auth })).body as unknown as AsyncIterable<Uint8Array>);
      if (n !== size) throw new Error(`hf read ${n} bytes`);
      readHf.push(size / MiB / ((performance.now() - t0) / 1000));
    }
    const best = (xs: number[]) => Math.round(Math.max(...xs));
    const notes = `${size / MiB} MiB, best of ${runs} alternating runs; one daemon, both listeners`;
    return [
      row({ name: 's3_get', metric: 'cache-hit read, @aws-sdk/client-s3 GetObject', unit: 'MiB/s', value: best(readS3), peer: 'native download of the same file (fetch)', peer_value: best(readNative), better: 'higher', notes }),
      row({ name: 'hf_resolve', metric: 'cache-hit read through the Hugging Face mirror (fetch)', unit: 'MiB/s', value: best(readHf), peer: 'native download of the same file (fetch)', peer_value: best(readNative2), better: 'higher', notes }),
      row({ name: 's3_put', metric: 'multipart upload, @aws-sdk/lib-storage (16 MiB parts, 4 in flight)', unit: 'MiB/s', value: best(viaS3), peer: 'native streamed PUT of the same bytes (fetch)', peer_value: best(native), better: 'higher', notes }),
    ];
  } finally {
    await stop(d.proc);
    rmSync(dir, { recursive: true, force: true });
  }
}
