import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { InvalidInput, NotFound } from '../errors.js';
import { Sealer } from '../crypto/sealed-stream.js';
import type { ByteRange, ObjectInfo, ObjectStore, PutCondition, PutOptions, PutResult, VersionedObject } from './object-store.js';

// Encryption at rest for any driver: every object is sealed (sealed-stream.ts) on its way in
// and opened on its way out, so fs, MinIO and S3 only ever hold ciphertext. Sizes, ranges and
// sha256 are those of the plaintext, as the registry expects. The sha256 check runs before the
// final package is handed to the driver: a mismatch fails the driver's put mid-stream, which
// every driver turns into "nothing written".

export class SealedObjectStore implements ObjectStore {
  readonly name: string;

  constructor(
    private readonly inner: ObjectStore,
    private readonly sealer: Sealer,
  ) {
    this.name = `${inner.name}+sealed`;
  }

  async put(key: string, body: AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    const hash = createHash('sha256');
    let size = 0;
    let sha256 = '';
    async function* measured(): AsyncIterable<Uint8Array> {
      for await (const chunk of body) {
        hash.update(chunk);
        size += chunk.byteLength;
        yield chunk;
      }
      sha256 = hash.digest('hex');
      if (options.expectedSha256 && options.expectedSha256.toLowerCase() !== sha256) {
        throw new InvalidInput(`the content's sha256 is ${sha256}, not the ${options.expectedSha256} the client declared`);
      }
    }
    await this.inner.put(key, this.sealer.seal(measured()));
    return { key, size, sha256 };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const raw = await this.inner.head(key);
    if (!raw) throw new NotFound(`object ${key} does not exist`);
    const size = Sealer.plainSize(raw.size);
    if (range && (range.start < 0 || range.end < range.start || range.end >= size)) {
      throw new InvalidInput(`range ${range.start}-${range.end} is outside the object (${size} bytes)`);
    }
    return this.sealer.open((start, end) => this.inner.get(key, { start, end }), raw.size, range);
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const raw = await this.inner.head(key);
    return raw && { ...raw, size: Sealer.plainSize(raw.size) };
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const o of this.inner.list(prefix)) yield { ...o, size: Sealer.plainSize(o.size) };
  }

  async readVersioned(key: string): Promise<VersionedObject | undefined> {
    const raw = await this.inner.readVersioned(key);
    if (!raw) return undefined;
    const clear = await this.sealer.open(async (start, end) => [raw.body.subarray(start, end + 1)], raw.body.length);
    const parts: Buffer[] = [];
    for await (const c of clear) parts.push(c as Buffer);
    return { body: Buffer.concat(parts), version: raw.version };
  }

  async putIf(key: string, body: Buffer, condition: PutCondition): Promise<string | undefined> {
    const parts: Buffer[] = [];
    for await (const c of this.sealer.seal([body])) parts.push(c);
    return this.inner.putIf(key, Buffer.concat(parts), condition);
  }

  sweepIncomplete(olderThanMs: number): Promise<number> {
    return this.inner.sweepIncomplete?.(olderThanMs) ?? Promise.resolve(0);
  }
}
