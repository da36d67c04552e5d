import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { Client, type ClientOptions } from 'minio';
import { InsufficientStorage, InvalidInput, isOutOfSpace, NotFound } from '../errors.js';
import {
  checkKey,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
  type PutCondition,
  type PutOptions,
  type PutResult,
  type VersionedObject,
} from './object-store.js';

// MinIO or any S3. Large puts drive multipart upload themselves instead of using the client's
// streamed putObject: that one first calls ListMultipartUploads (which s3rver and some
// gateways lack), picks parts of 64 MiB or more (528 MiB when the size is unknown) and sends
// them one at a time. Here parts of `partSize` go up `parallelParts` at a time, so memory
// stays under parallelParts × partSize whatever the object's size. The object becomes visible
// only at CompleteMultipartUpload, after the sha256 check; any failure aborts the upload, so
// a key never holds partial bytes.

export interface S3ObjectStoreOptions {
  client: ClientOptions;
  bucket: string;
  /** Bytes per multipart part; S3 wants at least 5 MiB for all parts but the last. */
  partSize?: number;
  parallelParts?: number;
}

export class S3ObjectStore implements ObjectStore {
  readonly name = 's3';
  private readonly client: Client;
  private readonly bucket: string;
  private readonly partSize: number;
  private readonly parallelParts: number;

  constructor(options: S3ObjectStoreOptions) {
    this.client = new Client(options.client);
    this.bucket = options.bucket;
    this.partSize = options.partSize ?? 16 * 1024 * 1024;
    this.parallelParts = options.parallelParts ?? 4;
  }

  async ensureBucket(region?: string): Promise<void> {
    if (!(await this.client.bucketExists(this.bucket))) await this.client.makeBucket(this.bucket, region ?? '');
  }

  async put(key: string, body: AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const hash = createHash('sha256');
    let size = 0;
    let buffered: Buffer[] = [];
    let bufferedBytes = 0;
    let uploadId: string | undefined;
    const parts: Array<Promise<{ part: number; etag: string }>> = [];
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    const verify = (sha256: string) => {
      if (options.expectedSha256 && options.expectedSha256.toLowerCase() !== sha256) {
        throw new InvalidInput(`the content's sha256 is ${sha256}, not the ${options.expectedSha256} the client declared`);
      }
    };
    const sendPart = async (payload: Buffer) => {
      uploadId ??= await this.client.initiateNewMultipartUpload(this.bucket, key, {});
      const partNumber = parts.length + 1;
      const p = this.client
        .uploadPart({ bucketName: this.bucket, objectName: key, uploadID: uploadId, partNumber, headers: {} }, payload)
        .then((r) => ({ part: partNumber, etag: r.etag }));
      parts.push(p);
      // A slot settles when its part does and never rejects; the first failure is kept.
      const slot: Promise<void> = p
        .then(
          () => undefined,
          (err: unknown) => {
            failure ??= err;
          },
        )
        .finally(() => inFlight.delete(slot));
      inFlight.add(slot);
      // Bounded memory: wait for a free slot before reading more of the body.
      while (inFlight.size >= this.parallelParts) await Promise.race(inFlight);
      if (failure) throw failure;
    };
    try {
      for await (const chunk of body) {
        hash.update(chunk);
        size += chunk.byteLength;
        buffered.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        bufferedBytes += chunk.byteLength;
        while (bufferedBytes >= this.partSize) {
          const all = Buffer.concat(buffered);
          await sendPart(all.subarray(0, this.partSize));
          const rest = all.subarray(this.partSize);
          buffered = rest.length ? [rest] : [];
          bufferedBytes = rest.length;
        }
      }
      const sha256 = hash.digest('hex');
      if (uploadId === undefined) {
        // Small object: one PUT, after the check, so a mismatch sends nothing at all.
        verify(sha256);
        const payload = Buffer.concat(buffered);
        await this.client.putObject(this.bucket, key, payload, payload.length);
        return { key, size, sha256 };
      }
      if (bufferedBytes > 0) await sendPart(Buffer.concat(buffered));
      const etags = await Promise.all(parts);
      verify(sha256);
      await this.client.completeMultipartUpload(this.bucket, key, uploadId, etags);
      return { key, size, sha256 };
    } catch (err) {
      await Promise.allSettled(parts);
      if (uploadId !== undefined) await this.client.abortMultipartUpload(this.bucket, key, uploadId).catch(() => undefined);
      if (isOutOfSpace(err)) throw new InsufficientStorage(`the object store (bucket ${this.bucket})`);
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    checkKey(key);
    const info = await this.head(key);
    if (!info) throw new NotFound(`object ${key} does not exist`);
    if (!range) return this.client.getObject(this.bucket, key);
    if (range.start < 0 || range.end < range.start || range.end >= info.size) {
      throw new InvalidInput(`range ${range.start}-${range.end} is outside the object (${info.size} bytes)`);
    }
    const length = range.end - range.start + 1;
    return truncate(await this.client.getPartialObject(this.bucket, key, range.start, length), length);
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const s = await this.client.statObject(this.bucket, key);
      return { key, size: s.size };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    await this.client.removeObject(this.bucket, key);
  }

  async readVersioned(key: string): Promise<VersionedObject | undefined> {
    checkKey(key);
    try {
      // One GET gives the bytes and the ETag of those same bytes (a HEAD then GET could mix two writes).
      const res = await this.client.makeRequestAsync({ method: 'GET', bucketName: this.bucket, objectName: key }, '', [200]);
      const parts: Buffer[] = [];
      for await (const c of res) parts.push(c as Buffer);
      return { body: Buffer.concat(parts), version: String(res.headers.etag) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  // S3's conditional writes: If-None-Match: * creates only when absent, If-Match: <etag>
  // replaces only that version; the loser gets 412 PreconditionFailed (AWS S3 since 2024, and
  // MinIO). AWS answers 409 ConditionalRequestConflict to a put racing another conditional put
  // on the key; either way this writer did not win. s3rver ignores both headers, which is why
  // the lease probes the store before trusting it.
  async putIf(key: string, body: Buffer, condition: PutCondition): Promise<string | undefined> {
    checkKey(key);
    const headers = 'ifAbsent' in condition ? { 'If-None-Match': '*' } : { 'If-Match': condition.ifVersion };
    try {
      const res = await this.client.makeRequestAsync({ method: 'PUT', bucketName: this.bucket, objectName: key, headers }, body, [200]);
      res.resume();
      return String(res.headers.etag);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'PreconditionFailed' || code === 'ConditionalRequestConflict' || (code === 'NoSuchKey' && 'ifVersion' in condition)) return undefined;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const stream = this.client.listObjectsV2(this.bucket, prefix, true);
    for await (const item of stream as AsyncIterable<{ name?: string; size?: number; lastModified?: Date }>) {
      if (item.name !== undefined) yield { key: item.name, size: item.size ?? 0, ...(item.lastModified ? { modified: item.lastModified } : {}) };
    }
  }
}

// Some S3 servers answer `Range: bytes=0-0` with the whole object (s3rver reads an end of 0
// as "no end"). The bytes from offset 0 are still right, so cutting the stream at the asked
// length keeps a range read exact on them too.
function truncate(source: Readable, length: number): Readable {
  async function* take() {
    let left = length;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (chunk.length >= left) {
          yield chunk.subarray(0, left);
          return;
        }
        left -= chunk.length;
        yield chunk;
      }
    } finally {
      source.destroy();
    }
  }
  return Readable.from(take(), { objectMode: false });
}

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'NotFound' || code === 'NoSuchKey';
}
