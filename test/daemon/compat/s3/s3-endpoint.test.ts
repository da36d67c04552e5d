import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketPolicyCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import * as Minio from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sha256 } from '../../../helpers/aws-hash.js';
import { api, startDaemon, type Daemon } from '../../../helpers/daemon.js';
import { freePort } from '../../../helpers/redis.js';

// The S3 endpoint driven by clients nobody here wrote — @aws-sdk/client-s3 (with its own
// signing, aws-chunked streaming and checksums) and the minio client — configured only with
// their documented endpoint and credential settings.

let d: Daemon;
let endpoint: string;
let writer: { accessKeyId: string; secretAccessKey: string };
let reader: { accessKeyId: string; secretAccessKey: string };

const client = (credentials = writer) => new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const code = async (p: Promise<unknown>) => {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return `${(err as { name: string }).name} ${(err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? ''}`.trim();
  }
};

beforeAll(async () => {
  const port = await freePort();
  d = await startDaemon({ set: [`s3.listen=127.0.0.1:${port}`] });
  endpoint = `http://127.0.0.1:${port}`;
  const creds = async (role: string) => {
    const t = (await api(d, 'POST', '/v1/admin/tokens', { name: `s3-${role}`, role, s3: true })).body;
    return { accessKeyId: t.s3.access_key_id as string, secretAccessKey: t.s3.secret_access_key as string };
  };
  writer = await creds('service');
  reader = await creds('reader');
});
afterAll(() => d?.stop());

describe('S3 endpoint with @aws-sdk/client-s3', () => {
  it('lists the buckets, answers HeadBucket, and CreateBucket only for the existing names', async () => {
    const s3 = client();
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(['checkpoints', 'datasets', 'models']);
    expect(await code(s3.send(new HeadBucketCommand({ Bucket: 'models' })))).toBe('ok');
    expect(await code(s3.send(new HeadBucketCommand({ Bucket: 'nope' })))).toBe('NotFound 404');
    expect(await code(s3.send(new CreateBucketCommand({ Bucket: 'models' })))).toBe('ok');
    expect(await code(s3.send(new CreateBucketCommand({ Bucket: 'other' })))).toBe('InvalidBucketName 400');
  });

  it('puts (plain and streamed with a trailing checksum), heads and gets a file; the ETag is the MD5; the version and model are made on first PUT', async () => {
    const s3 = client();
    const config = Buffer.from('{"architectures":["LlamaForCausalLM"]}');
    const put = await s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'llama/v1/config.json', Body: config }));
    expect(put.ETag).toBe(`"${md5(config)}"`);
    const weights = randomBytes(3 * 1024 * 1024 + 17);
    // A stream body: the SDK sends aws-chunked with x-amz-checksum-crc32 in a trailer.
    await s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'llama/v1/weights/model-00001.safetensors', Body: Readable.from([weights.subarray(0, 1_000_000), weights.subarray(1_000_000)]), ContentLength: weights.length }));
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'models', Key: 'llama/v1/weights/model-00001.safetensors' }));
    expect(head.ContentLength).toBe(weights.length);
    expect(head.ETag).toBe(`"${md5(weights)}"`);
    expect(head.LastModified).toBeInstanceOf(Date);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'llama/v1/weights/model-00001.safetensors' }));
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(weights)).toBe(true);
    // The native API sees the same file.
    const v = (await api(d, 'GET', '/v1/models/llama/versions/v1')).body;
    expect(v.files.map((f: { path: string }) => f.path).sort()).toEqual(['config.json', 'weights/model-00001.safetensors']);
  });

  it('serves one Range as 206 without a full-object checksum, and honours If-Match / If-None-Match', async () => {
    const s3 = client();
    const data = Buffer.from('0123456789abcdef');
    const { ETag } = await s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin', Body: data }));
    const res = await fetch(await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin' })), { headers: { range: 'bytes=2-5' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe('bytes 2-5/16');
    expect([...res.headers.keys()].filter((k) => k.startsWith('x-amz-checksum'))).toEqual([]);
    expect(await res.text()).toBe('2345');
    const r = await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin', Range: 'bytes=10-', IfMatch: ETag }));
    expect(await r.Body!.transformToString()).toBe('abcdef');
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin', IfMatch: '"0000"' })))).toBe('PreconditionFailed 412');
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin', IfNoneMatch: ETag })))).toMatch(/ 304$/);
    expect(await code(s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin', Range: 'bytes=100-200' })))).toBe('InvalidRange 416');
    // Sub-resources are never answered with the object or a listing: no tags; policy refused.
    expect((await s3.send(new GetObjectTaggingCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin' }))).TagSet).toEqual([]);
    expect(await code(s3.send(new GetObjectTaggingCommand({ Bucket: 'models', Key: 'ranged/v1/none' })))).toBe('NoSuchKey 404');
    expect(await code(s3.send(new GetObjectAclCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin' })))).toBe('NotImplemented 501');
    expect(await code(s3.send(new GetBucketPolicyCommand({ Bucket: 'models' })))).toBe('NotImplemented 501');
    // response-* overrides, signed into a presigned link.
    const saved = await fetch(await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin', ResponseContentDisposition: 'attachment; filename="f.bin"', ResponseContentType: 'text/plain' })));
    expect([saved.headers.get('content-disposition'), saved.headers.get('content-type')]).toEqual(['attachment; filename="f.bin"', 'text/plain']);
    // If-Range: the range while the ETag matches, the whole object once it does not.
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'models', Key: 'ranged/v1/f.bin' }));
    const held = await fetch(url, { headers: { range: 'bytes=2-5', 'if-range': ETag! } });
    expect([held.status, await held.text()]).toEqual([206, '2345']);
    const changed = await fetch(url, { headers: { range: 'bytes=2-5', 'if-range': '"0123"' } });
    expect([changed.status, (await changed.text()).length]).toEqual([200, 16]);
    const old = await fetch(url, { headers: { range: 'bytes=2-5', 'if-range': 'Thu, 01 Jan 1970 00:00:00 GMT' } });
    expect([old.status, (await old.text()).length]).toEqual([200, 16]);
  });

  it('lists with prefix, delimiter (versions and aliases as CommonPrefixes), pages by continuation, V1 too, and url encoding', async () => {
    const s3 = client();
    for (const k of ['a.txt', 'b/c.txt', 'b/d e.txt']) await s3.send(new PutObjectCommand({ Bucket: 'models', Key: `lister/v1/${k}`, Body: k }));
    expect((await api(d, 'PUT', '/v1/models/lister/aliases/prod', { version: 'v1' })).status).toBeLessThan(300);
    const top = await s3.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'lister/', Delimiter: '/' }));
    expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['lister/prod/', 'lister/v1/']);
    const alias = await s3.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'lister/prod/' }));
    expect(alias.Contents?.map((o) => o.Key)).toEqual(['lister/prod/a.txt', 'lister/prod/b/c.txt', 'lister/prod/b/d e.txt']);
    const all = await s3.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'lister/' }));
    expect(all.Contents?.map((o) => o.Key)).toEqual(['lister/v1/a.txt', 'lister/v1/b/c.txt', 'lister/v1/b/d e.txt']);
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'lister/v1/', MaxKeys: 1, Delimiter: '/', ContinuationToken: token }));
      keys.push(...(page.Contents ?? []).map((o) => o.Key!), ...(page.CommonPrefixes ?? []).map((p) => p.Prefix!));
      token = page.NextContinuationToken;
    } while (token);
    expect(keys).toEqual(['lister/v1/a.txt', 'lister/v1/b/']);
    const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'models', Prefix: 'lister/v1/b/', EncodingType: 'url' }));
    // V1 with EncodingType url: the keys come back encoded (the SDK leaves them so).
    expect(v1.Contents?.map((o) => o.Key)).toEqual(['lister/v1/b/c.txt', 'lister/v1/b/d%20e.txt']);
    const raw = await (await fetch(await getSignedUrl(s3, new ListObjectsV2Command({ Bucket: 'models', Prefix: 'lister/v1/b/', EncodingType: 'url' })))).text();
    expect(raw).toContain('<Key>lister/v1/b/d%20e.txt</Key>');
  });

  it('refuses: a wrong secret, an unknown key, a reader writing, a finalized version, an expired presigned URL, a checksum mismatch (nothing stored)', async () => {
    expect(await code(client({ ...writer, secretAccessKey: 'x'.repeat(40) }).send(new ListBucketsCommand({})))).toBe('SignatureDoesNotMatch 403');
    expect(await code(client({ accessKeyId: 'STRATANOSUCHKEY00000', secretAccessKey: 'x'.repeat(40) }).send(new ListBucketsCommand({})))).toBe('InvalidAccessKeyId 403');
    expect(await code(client(reader).send(new PutObjectCommand({ Bucket: 'models', Key: 'r/v1/x', Body: 'x' })))).toBe('AccessDenied 403');
    expect(await code(client(reader).send(new ListObjectsV2Command({ Bucket: 'models' })))).toBe('ok');
    const s3 = client();
    await s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'frozen/v1/a', Body: 'a' }));
    expect((await api(d, 'POST', '/v1/models/frozen/versions/v1/finalize')).status).toBe(200);
    const refused = await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'frozen/v1/b', Body: 'b' })));
    expect(refused).toBe('AccessDenied 403');
    const raw = await fetch(`${endpoint}/models/frozen/v1/b`, { method: 'PUT', body: 'b' });
    expect(raw.status).toBe(403);
    const expired = new URL(await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'models', Key: 'frozen/v1/a' }), { expiresIn: 1 }));
    await new Promise((r) => setTimeout(r, 2100));
    const late = await fetch(expired);
    expect(late.status).toBe(403);
    expect(await late.text()).toContain('Request has expired');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'sums/v1/a', Body: 'hello', ChecksumCRC32: 'AAAAAA==' })))).toBe('BadDigest 400');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'sums/v1/b', Body: 'hello', ContentMD5: createHash('md5').update('other').digest('base64') })))).toBe('BadDigest 400');
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'models', Key: 'sums/v1/a' })))).toBe('NotFound 404');
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'models', Key: 'sums/v1/b' })))).toBe('NotFound 404');
    // The checksums the SDK computes itself pass.
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'sums/v1/c', Body: 'hello', ChecksumAlgorithm: 'CRC32C' })))).toBe('ok');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'sums/v1/d', Body: 'hello', ChecksumAlgorithm: 'CRC64NVME' })))).toBe('ok');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'sums/v1/e', Body: 'hello', ChecksumAlgorithm: 'SHA256' })))).toBe('ok');
    // S3 errors are XML with the code and a request id.
    const anonymous = await fetch(`${endpoint}/models/sums/v1/c`);
    expect(anonymous.status).toBe(403);
    expect(await anonymous.text()).toMatch(/<Error><Code>AccessDenied<\/Code><Message>.+<\/Message><Resource>\/models\/sums\/v1\/c<\/Resource><RequestId>[0-9A-F]+<\/RequestId><\/Error>/);
  });
});

describe('S3 copies, deletes, virtual hosts and 100-continue', () => {
  it('copies by reference into an open version (from a final one too), deletes from open versions only, and DeleteObjects reports per key', async () => {
    const s3 = client();
    await s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'cp/v1/a.bin', Body: 'payload-a' }));
    expect((await api(d, 'POST', '/v1/models/cp/versions/v1/finalize')).status).toBe(200);
    const copied = await s3.send(new CopyObjectCommand({ Bucket: 'models', Key: 'cp/v2/a.bin', CopySource: 'models/cp/v1/a.bin' }));
    expect(copied.CopyObjectResult?.ETag).toBe(`"${md5(Buffer.from('payload-a'))}"`);
    expect(await (await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'cp/v2/a.bin' }))).Body!.transformToString()).toBe('payload-a');
    expect(await code(s3.send(new CopyObjectCommand({ Bucket: 'models', Key: 'cp/v1/b.bin', CopySource: 'models/cp/v2/a.bin' })))).toBe('AccessDenied 403');
    expect(await code(s3.send(new CopyObjectCommand({ Bucket: 'models', Key: 'cp/v2/x', CopySource: 'models/cp/v2/none' })))).toBe('NoSuchKey 404');
    // Deleting: open versions only; an absent key is still 204.
    expect(await code(s3.send(new DeleteObjectCommand({ Bucket: 'models', Key: 'cp/v1/a.bin' })))).toBe('AccessDenied 403');
    await s3.send(new DeleteObjectCommand({ Bucket: 'models', Key: 'cp/v2/a.bin' }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'models', Key: 'cp/v2/never-was' }));
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'models', Key: 'cp/v2/a.bin' })))).toBe('NotFound 404');
    expect(await (await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'cp/v1/a.bin' }))).Body!.transformToString()).toBe('payload-a');
    for (const k of ['x', 'y']) await s3.send(new PutObjectCommand({ Bucket: 'models', Key: `cp/v3/${k}`, Body: k }));
    const res = await s3.send(new DeleteObjectsCommand({ Bucket: 'models', Delete: { Objects: [{ Key: 'cp/v3/x' }, { Key: 'cp/v3/y' }, { Key: 'cp/v1/a.bin' }] } }));
    expect(res.Deleted?.map((x) => x.Key)).toEqual(['cp/v3/x', 'cp/v3/y']);
    expect(res.Errors?.map((x) => [x.Key, x.Code])).toEqual([['cp/v1/a.bin', 'AccessDenied']]);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'cp/v3/' }))).KeyCount).toBe(0);
  });

  it('answers virtual-host style requests under s3.domain, and a PUT that waits for 100-continue', async () => {
    const port = await freePort();
    const vd = await startDaemon({ set: [`s3.listen=127.0.0.1:${port}`, 's3.domain=s3.strata.test'] });
    try {
      const t = (await api(vd, 'POST', '/v1/admin/tokens', { name: 'vh', role: 'service', s3: true })).body;
      const credentials = { accessKeyId: t.s3.access_key_id, secretAccessKey: t.s3.secret_access_key };
      // The SDK signs for models.s3.strata.test (bucket in the host name); the request goes to
      // 127.0.0.1 with that Host header, as a DNS wildcard would send it.
      const { request } = await import('node:http');
      const vh = new S3Client({ endpoint: `http://s3.strata.test:${port}`, region: 'us-east-1', credentials });
      const send = (url: string, method: string, body?: string) =>
        new Promise<{ status: number; text: string }>((resolve, reject) => {
          const u = new URL(url);
          expect(u.host).toBe(`models.s3.strata.test:${port}`);
          const req = request({ host: '127.0.0.1', port, method, path: u.pathname + u.search, headers: { host: u.host, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, text }));
          });
          req.on('error', reject);
          req.end(body);
        });
      expect((await send(await getSignedUrl(vh, new PutObjectCommand({ Bucket: 'models', Key: 'vh/v1/a.txt' })), 'PUT', 'virtual')).status).toBe(200);
      expect(await send(await getSignedUrl(vh, new GetObjectCommand({ Bucket: 'models', Key: 'vh/v1/a.txt' })), 'GET')).toEqual({ status: 200, text: 'virtual' });
      // Expect: 100-continue, as botocore sends for larger uploads: the body goes after the interim answer.
      const path = await getSignedUrl(new S3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials }), new PutObjectCommand({ Bucket: 'models', Key: 'vh/v1/continue.txt' }));
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(path, { method: 'PUT', headers: { expect: '100-continue', 'content-length': '8' } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('continue', () => req.end('continued'.slice(0, 8)));
        req.on('error', reject);
      });
      expect(status).toBe(200);
      expect((await send(await getSignedUrl(vh, new GetObjectCommand({ Bucket: 'models', Key: 'vh/v1/continue.txt' })), 'GET')).text).toBe('continue');
    } finally {
      await vd.stop();
    }
  });
});

describe('S3 checkpoints bucket', () => {
  it('puts {run}/{step}/{path}, lists and reads it back; the native API sees the step', async () => {
    const s3 = client();
    const state = randomBytes(300_000);
    const put = await s3.send(new PutObjectCommand({ Bucket: 'checkpoints', Key: 'run-7/1200/optimizer.pt', Body: state }));
    expect(put.ETag).toBe(`"${md5(state)}"`);
    await s3.send(new PutObjectCommand({ Bucket: 'checkpoints', Key: 'run-7/1300/optimizer.pt', Body: 'later' }));
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'checkpoints', Prefix: 'run-7/', Delimiter: '/' }));
    expect(listed.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['run-7/1200/', 'run-7/1300/']);
    const part = await s3.send(new GetObjectCommand({ Bucket: 'checkpoints', Key: 'run-7/1200/optimizer.pt', Range: 'bytes=100-199' }));
    expect(Buffer.from(await part.Body!.transformToByteArray()).equals(state.subarray(100, 200))).toBe(true);
    expect((await s3.send(new HeadObjectCommand({ Bucket: 'checkpoints', Key: 'run-7/1200/optimizer.pt' }))).ETag).toBe(`"${md5(state)}"`);
    expect((await api(d, 'GET', '/v1/runs/run-7/checkpoints')).body.items.map((i: { step: number }) => i.step)).toEqual([1300, 1200]);
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'checkpoints', Key: 'run-7/x/optimizer.pt' })))).toBe('NotFound 404');
  });

  it('takes a checkpoint in parts (lib-storage), byte-equal with the md5-of-md5s ETag; an upload id cannot complete into another bucket or step', async () => {
    const s3 = client();
    const big = randomBytes(11 * 1024 * 1024 + 9);
    const up = await new Upload({ client: s3, params: { Bucket: 'checkpoints', Key: 'run-8/100/model.pt', Body: Readable.from([big]) }, partSize: 5 * 1024 * 1024, queueSize: 2 }).done();
    expect(up.ETag).toMatch(/^"[0-9a-f]{32}-3"$/);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'checkpoints', Key: 'run-8/100/model.pt' }));
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(big)).toBe(true);
    expect((await s3.send(new HeadObjectCommand({ Bucket: 'checkpoints', Key: 'run-8/100/model.pt' }))).ETag).toBe(up.ETag);
    expect((await api(d, 'GET', '/v1/runs/run-8/checkpoints')).body.items.map((i: { step: number }) => i.step)).toEqual([100]);
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'checkpoints', Key: 'run-8/200/model.pt' }));
    const e = (await s3.send(new UploadPartCommand({ Bucket: 'checkpoints', Key: 'run-8/200/model.pt', UploadId, PartNumber: 1, Body: 'tail' }))).ETag!;
    const parts = { MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e }] } };
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'checkpoints', Key: 'run-8/201/model.pt', UploadId, ...parts })))).toBe('NoSuchUpload 404');
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'models', Key: 'run-8/200/model.pt', UploadId, ...parts })))).toBe('NoSuchUpload 404');
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'checkpoints', Key: 'run-8/200/model.pt', UploadId, ...parts })))).toBe('ok');
    expect(await (await s3.send(new GetObjectCommand({ Bucket: 'checkpoints', Key: 'run-8/200/model.pt' }))).Body!.transformToString()).toBe('tail');
    // UploadPartCopy: a model file made of two ranges of the checkpoint, across buckets.
    const mp = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'fromckpt/v1/w.bin' }));
    const half = 6 * 1024 * 1024;
    const p1 = await s3.send(new UploadPartCopyCommand({ Bucket: 'models', Key: 'fromckpt/v1/w.bin', UploadId: mp.UploadId, PartNumber: 1, CopySource: 'checkpoints/run-8/100/model.pt', CopySourceRange: `bytes=0-${half - 1}` }));
    const p2 = await s3.send(new UploadPartCopyCommand({ Bucket: 'models', Key: 'fromckpt/v1/w.bin', UploadId: mp.UploadId, PartNumber: 2, CopySource: 'checkpoints/run-8/100/model.pt', CopySourceRange: `bytes=${half}-${big.length - 1}` }));
    expect(p1.CopyPartResult?.ETag).toBe(`"${md5(big.subarray(0, half))}"`);
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'models', Key: 'fromckpt/v1/w.bin', UploadId: mp.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.CopyPartResult!.ETag! }, { PartNumber: 2, ETag: p2.CopyPartResult!.ETag! }] } }));
    const joined = await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'fromckpt/v1/w.bin' }));
    expect(Buffer.from(await joined.Body!.transformToByteArray()).equals(big)).toBe(true);
    expect(await code(s3.send(new UploadPartCopyCommand({ Bucket: 'models', Key: 'fromckpt/v1/w.bin', UploadId: mp.UploadId, PartNumber: 1, CopySource: 'checkpoints/run-8/100/model.pt', CopySourceRange: `bytes=0-${big.length}` })))).toMatch(/^(InvalidRange 416|NoSuchUpload 404)$/);
  });
});

describe('S3 datasets bucket and tenants', () => {
  it('adds immutable raw files, lists and reads them and a version\'s shards; user tokens cannot read datasets but can read models', async () => {
    const s3 = client();
    expect((await api(d, 'POST', '/v1/datasets', { name: 'corpus' })).status).toBe(201);
    const rows = Array.from({ length: 50 }, (_, i) => JSON.stringify({ text: `row ${i} of the corpus` })).join('\n');
    await s3.send(new PutObjectCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-1.jsonl', Body: rows }));
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-1.jsonl', Body: 'again' })))).toBe('AccessDenied 403');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'datasets', Key: 'corpus/v1/shard-00000.parquet', Body: 'x' })))).toBe('AccessDenied 403');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'datasets', Key: 'nodataset/raw/a.jsonl', Body: 'x' })))).toBe('NoSuchKey 404');
    // A large raw file in parts; starting one for an existing name, a version or no dataset is refused.
    const big = Buffer.from(Array.from({ length: 200_000 }, (_, i) => JSON.stringify({ text: `long row ${i}` })).join('\n'));
    const up = await new Upload({ client: s3, params: { Bucket: 'datasets', Key: 'corpus/raw/part-2.jsonl', Body: Readable.from([big]) }, partSize: 5 * 1024 * 1024, queueSize: 2 }).done();
    // The ETag the completion gave is the one HEAD and listings show (the catalog keeps SHA-256s).
    expect((await s3.send(new HeadObjectCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-2.jsonl' }))).ETag).toBe(up.ETag);
    expect(Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-2.jsonl' }))).Body!.transformToByteArray()).equals(big)).toBe(true);
    expect((await api(d, 'GET', '/v1/datasets/corpus')).body.raw_files.map((f: { file: string }) => f.file)).toEqual(['part-1.jsonl', 'part-2.jsonl']);
    expect(await code(s3.send(new CreateMultipartUploadCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-2.jsonl' })))).toBe('AccessDenied 403');
    expect(await code(s3.send(new CreateMultipartUploadCommand({ Bucket: 'datasets', Key: 'corpus/v1/s.parquet' })))).toBe('AccessDenied 403');
    expect(await code(s3.send(new CreateMultipartUploadCommand({ Bucket: 'datasets', Key: 'nodataset/raw/a.jsonl' })))).toBe('NoSuchKey 404');
    const job = (await api(d, 'POST', '/v1/datasets/corpus/jobs', { steps: ['normalize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job}`)).body.state, { timeout: 20_000, interval: 100 }).toBe('done');
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'datasets', Prefix: 'corpus/' }));
    const keys = listed.Contents?.map((o) => o.Key) ?? [];
    expect(keys.filter((k) => k.includes('/raw/'))).toEqual(['corpus/raw/part-1.jsonl', 'corpus/raw/part-2.jsonl']);
    expect(keys).toContain('corpus/v1/shard-00000.parquet');
    expect(await (await s3.send(new GetObjectCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-1.jsonl' }))).Body!.transformToString()).toBe(rows);
    const shard = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: 'datasets', Key: 'corpus/v1/shard-00000.parquet' }))).Body!.transformToByteArray());
    expect(shard.subarray(0, 4).toString()).toBe('PAR1');
    // A user token's S3 key: models yes (as on the native API), datasets no (they mix tenants).
    await api(d, 'POST', '/v1/users', { id: 'alice', email: 'alice@example.com', tier: 'free' });
    const t = (await api(d, 'POST', '/v1/admin/tokens', { name: 'alice-s3', role: 'user', user_id: 'alice', s3: true })).body;
    const alice = client({ accessKeyId: t.s3.access_key_id, secretAccessKey: t.s3.secret_access_key });
    expect(await code(alice.send(new ListObjectsV2Command({ Bucket: 'datasets' })))).toBe('AccessDenied 403');
    expect(await code(alice.send(new GetObjectCommand({ Bucket: 'datasets', Key: 'corpus/raw/part-1.jsonl' })))).toBe('AccessDenied 403');
    expect(await code(alice.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'llama/' })))).toBe('ok');
    expect(await code(alice.send(new PutObjectCommand({ Bucket: 'models', Key: 'alice/v1/x', Body: 'x' })))).toBe('AccessDenied 403');
    // Revoking the token revokes its S3 key.
    expect((await api(d, 'DELETE', `/v1/admin/tokens/${t.id}`)).status).toBeLessThan(300);
    expect(await code(alice.send(new ListObjectsV2Command({ Bucket: 'models' })))).toBe('InvalidAccessKeyId 403');
  });
});

describe('S3 multipart uploads', () => {
  it('@aws-sdk/lib-storage uploads a 17 MiB stream in parallel parts; the ETag is md5-of-md5s-N; the native API sees one file', async () => {
    const s3 = client();
    const data = randomBytes(17 * 1024 * 1024);
    const up = new Upload({ client: s3, params: { Bucket: 'models', Key: 'big/v1/model.safetensors', Body: Readable.from([data]) }, partSize: 5 * 1024 * 1024, queueSize: 4 });
    const done = await up.done();
    const partMd5s = [0, 1, 2, 3].map((i) => createHash('md5').update(data.subarray(i * 5 * 1024 * 1024, Math.min(data.length, (i + 1) * 5 * 1024 * 1024))).digest());
    expect(done.ETag).toBe(`"${createHash('md5').update(Buffer.concat(partMd5s)).digest('hex')}-4"`);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'big/v1/model.safetensors' }));
    expect(createHash('sha256').update(await got.Body!.transformToByteArray()).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect((await api(d, 'GET', '/v1/models/big/versions/v1')).body.files).toEqual([{ path: 'model.safetensors', size: data.length, sha256: createHash('sha256').update(data).digest('hex') }]);
  });

  it('takes parts out of order, lists them, joins only the listed ones, and refuses a wrong part ETag, a small middle part, a wrong order; abort removes the upload', async () => {
    const s3 = client();
    const Key = 'parts/v1/f.bin';
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key }));
    const p = [randomBytes(5 * 1024 * 1024), randomBytes(1024), randomBytes(5 * 1024 * 1024)];
    const e3 = (await s3.send(new UploadPartCommand({ Bucket: 'models', Key, UploadId, PartNumber: 3, Body: p[2] }))).ETag!;
    const e1 = (await s3.send(new UploadPartCommand({ Bucket: 'models', Key, UploadId, PartNumber: 1, Body: p[0] }))).ETag!;
    const e2 = (await s3.send(new UploadPartCommand({ Bucket: 'models', Key, UploadId, PartNumber: 2, Body: p[1] }))).ETag!;
    expect(e1).toBe(`"${md5(p[0]!)}"`);
    expect((await s3.send(new ListPartsCommand({ Bucket: 'models', Key, UploadId }))).Parts?.map((x) => [x.PartNumber, x.Size])).toEqual([[1, p[0]!.length], [2, 1024], [3, p[2]!.length]]);
    const complete = (parts: Array<{ PartNumber: number; ETag: string }>) => s3.send(new CompleteMultipartUploadCommand({ Bucket: 'models', Key, UploadId, MultipartUpload: { Parts: parts } }));
    expect(await code(complete([{ PartNumber: 1, ETag: e1 }, { PartNumber: 2, ETag: e2 }, { PartNumber: 3, ETag: e3 }]))).toBe('EntityTooSmall 400');
    expect(await code(complete([{ PartNumber: 3, ETag: e3 }, { PartNumber: 1, ETag: e1 }]))).toBe('InvalidPartOrder 400');
    expect(await code(complete([{ PartNumber: 1, ETag: e1 }, { PartNumber: 3, ETag: `"${'0'.repeat(32)}"` }]))).toBe('InvalidPart 400');
    expect(await code(s3.send(new HeadObjectCommand({ Bucket: 'models', Key })))).toBe('NotFound 404');
    // Parts 1 and 3 only: part 2 is dropped.
    const done = await complete([{ PartNumber: 1, ETag: e1 }, { PartNumber: 3, ETag: e3 }]);
    expect(done.ETag).toBe(`"${createHash('md5').update(Buffer.concat([Buffer.from(md5(p[0]!), 'hex'), Buffer.from(md5(p[2]!), 'hex')])).digest('hex')}-2"`);
    const got = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: 'models', Key }))).Body!.transformToByteArray());
    expect(got.equals(Buffer.concat([p[0]!, p[2]!]))).toBe(true);
    // A retry of that completion (its answer lost) gets the same answer; the parts are gone.
    expect((await complete([{ PartNumber: 1, ETag: e1 }, { PartNumber: 3, ETag: e3 }])).ETag).toBe(done.ETag);
    expect(await code(s3.send(new ListPartsCommand({ Bucket: 'models', Key, UploadId })))).toBe('NoSuchUpload 404');
    // A signed payload whose SHA-256 is not the body's: refused, and no part is kept.
    const { SignatureV4 } = await import('@smithy/signature-v4');
    const third = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'parts/v1/h.bin' }));
    const signer = new SignatureV4({ credentials: writer, region: 'us-east-1', service: 's3', sha256: Sha256 as never, uriEscapePath: false });
    const port = Number(new URL(endpoint).port);
    const signed = await signer.sign({ method: 'PUT', protocol: 'http:', hostname: '127.0.0.1', port, path: '/models/parts/v1/h.bin', query: { partNumber: '1', uploadId: third.UploadId! }, headers: { host: `127.0.0.1:${port}`, 'x-amz-content-sha256': createHash('sha256').update('other bytes').digest('hex') } });
    const bad = await fetch(`${endpoint}/models/parts/v1/h.bin?partNumber=1&uploadId=${third.UploadId}`, { method: 'PUT', headers: signed.headers as Record<string, string>, body: 'actual bytes' });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('<Code>XAmzContentSHA256Mismatch</Code>');
    expect((await s3.send(new ListPartsCommand({ Bucket: 'models', Key: 'parts/v1/h.bin', UploadId: third.UploadId }))).Parts ?? []).toEqual([]);
    // Abort.
    const second = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'parts/v1/g.bin' }));
    await s3.send(new UploadPartCommand({ Bucket: 'models', Key: 'parts/v1/g.bin', UploadId: second.UploadId, PartNumber: 1, Body: 'x' }));
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'models', Key: 'parts/v1/g.bin', UploadId: second.UploadId }));
    expect(await code(s3.send(new UploadPartCommand({ Bucket: 'models', Key: 'parts/v1/g.bin', UploadId: second.UploadId, PartNumber: 2, Body: 'y' })))).toBe('NoSuchUpload 404');
  });
});

describe('S3 endpoint under review (hostile and unlucky clients)', () => {
  it('parses a huge body of unclosed tags in linear time; the daemon keeps answering', async () => {
    const s3 = client();
    const url = await getSignedUrl(s3, new CompleteMultipartUploadCommand({ Bucket: 'models', Key: 'x/v1/y', UploadId: 'whatever' }), { expiresIn: 600 });
    const t0 = performance.now();
    const res = await fetch(url, { method: 'POST', body: '<Part>'.repeat(170_000) });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('MalformedXML');
    // 1 MiB of them took minutes with the regex parser; the bound here is generous.
    expect(performance.now() - t0).toBeLessThan(5000);
    expect((await fetch(`${d.url}/healthz`)).status).toBe(200);
  });

  it('multipart checks the version in the key against the upload; a refused PUT leaves no model behind; keys with control characters are refused', async () => {
    const s3 = client();
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'mpv/v1/c' }));
    expect(await code(s3.send(new UploadPartCommand({ Bucket: 'models', Key: 'mpv/v2/c', UploadId, PartNumber: 1, Body: 'x' })))).toBe('NoSuchUpload 404');
    const e = (await s3.send(new UploadPartCommand({ Bucket: 'models', Key: 'mpv/v1/c', UploadId, PartNumber: 1, Body: 'x' }))).ETag!;
    expect(await code(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'models', Key: 'mpv/v9/c', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e }] } })))).toBe('NoSuchUpload 404');
    // Through an alias: the upload is the alias's version's, reachable by either name (review).
    expect((await api(d, 'PUT', '/v1/models/mpv/aliases/prod', { version: 'v1' })).status).toBeLessThan(300);
    const viaAlias = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'mpv/prod/d' }));
    const ea = (await s3.send(new UploadPartCommand({ Bucket: 'models', Key: 'mpv/prod/d', UploadId: viaAlias.UploadId, PartNumber: 1, Body: 'aliased' }))).ETag!;
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'models', Key: 'mpv/v1/d', UploadId: viaAlias.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: ea }] } }));
    expect(await (await s3.send(new GetObjectCommand({ Bucket: 'models', Key: 'mpv/prod/d' }))).Body!.transformToString()).toBe('aliased');
    // A final version refuses the upload before any part is sent, saying why.
    expect((await api(d, 'POST', '/v1/models/mpv/versions/v1/finalize')).status).toBe(200);
    expect(await code(s3.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'mpv/v1/late' })))).toBe('AccessDenied 403');
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'ghost/v1/a', Body: 'hello', ContentMD5: createHash('md5').update('other').digest('base64') })))).toBe('BadDigest 400');
    expect((await api(d, 'GET', '/v1/models/ghost')).status).toBe(404);
    expect(await code(s3.send(new PutObjectCommand({ Bucket: 'models', Key: 'ctl/v1/a\r\nb', Body: 'x' })))).toBe('InvalidArgument 400');
  });

  it('refuses a signature with trailing junk, a presigned URL sent with an Authorization header, a forged continuation token; counts failed authentications', async () => {
    const s3 = client();
    const url = await getSignedUrl(s3, new ListObjectsV2Command({ Bucket: 'models' }));
    expect((await fetch(url + 'zz')).status).toBe(403);
    expect((await fetch(url, { headers: { authorization: 'AWS4-HMAC-SHA256 Credential=x' } })).status).toBe(400);
    expect(await code(s3.send(new ListObjectsV2Command({ Bucket: 'models', ContinuationToken: 'garbage!!' })))).toBe('InvalidArgument 400');
    const failures = async () => Number(/strata_auth_failures_total\{reason="invalid"\} (\d+)/.exec(await (await fetch(`${d.url}/metrics`)).text())?.[1] ?? 0);
    const before = await failures();
    await code(client({ ...writer, secretAccessKey: 'y'.repeat(40) }).send(new ListBucketsCommand({})));
    expect(await failures()).toBeGreaterThan(before);
  });

  it('pages a recursive listing of a large model by key range: every key once, in S3 order', async () => {
    const s3 = client();
    const names = Array.from({ length: 1203 }, (_, i) => `f${String(i).padStart(4, '0')}`);
    // Rows straight through the native API would take a while; the S3 PUTs are small and quick.
    await Promise.all(names.map((n, i) => (i % 4 === 0 ? s3.send(new PutObjectCommand({ Bucket: 'models', Key: `wide/v1/${n}`, Body: n })) : undefined)));
    for (const [i, n] of names.entries()) if (i % 4 !== 0) await s3.send(new PutObjectCommand({ Bucket: 'models', Key: `wide/v2/${n}`, Body: n }));
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'wide/', MaxKeys: 500, ContinuationToken: token }));
      seen.push(...(page.Contents ?? []).map((o) => o.Key!));
      token = page.NextContinuationToken;
      pages++;
    } while (token);
    expect(pages).toBe(3);
    expect(seen.length).toBe(1203);
    expect(new Set(seen).size).toBe(1203);
    expect([...seen].sort()).toEqual(seen);
  }, 60_000);
});

describe('S3 endpoint with the minio client', () => {
  it('puts (a signed payload), lists, reads a range and the whole file', async () => {
    const mc = new Minio.Client({ endPoint: '127.0.0.1', port: Number(new URL(endpoint).port), useSSL: false, accessKey: writer.accessKeyId, secretKey: writer.secretAccessKey, region: 'us-east-1', pathStyle: true });
    const data = randomBytes(256 * 1024);
    await mc.putObject('models', 'mc/v1/blob.bin', data, data.length);
    const stat = await mc.statObject('models', 'mc/v1/blob.bin');
    expect(stat.size).toBe(data.length);
    expect(stat.etag).toBe(md5(data));
    const listed: string[] = [];
    for await (const o of mc.listObjectsV2('models', 'mc/', true)) listed.push((o as { name: string }).name);
    expect(listed).toEqual(['mc/v1/blob.bin']);
    const part = await mc.getPartialObject('models', 'mc/v1/blob.bin', 1000, 100);
    const chunks: Buffer[] = [];
    for await (const c of part) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(data.subarray(1000, 1100))).toBe(true);
    const whole: Buffer[] = [];
    for await (const c of await mc.getObject('models', 'mc/v1/blob.bin')) whole.push(c as Buffer);
    expect(Buffer.concat(whole).equals(data)).toBe(true);
  });
});
