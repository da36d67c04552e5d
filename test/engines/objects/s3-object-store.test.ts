import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidInput } from '../../../src/engines/errors.js';
import { S3ObjectStore } from '../../../src/engines/objects/s3-object-store.js';
import { startS3rver } from '../../helpers/s3rver.js';
import { objectStoreContract } from './object-store.contract.js';

let s3: Awaited<ReturnType<typeof startS3rver>>;
let n = 0;
const MiB = 1024 * 1024;

beforeAll(async () => {
  s3 = await startS3rver([]);
});
afterAll(() => s3.close());

async function freshStore(partSize = 5 * MiB) {
  const store = new S3ObjectStore({ client: s3.client, bucket: `strata-test-${++n}`, partSize, parallelParts: 3 });
  await store.ensureBucket();
  return store;
}

objectStoreContract('s3 (s3rver)', () => freshStore());

describe('s3 object store', () => {
  async function* chunks(buf: Buffer, size = 256 * 1024) {
    for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
  }

  it('uploads a multi-part object in parallel parts and reads it back whole and by range', async () => {
    const store = await freshStore();
    const data = randomBytes(17 * MiB + 123);
    const put = await store.put('weights/model.bin', chunks(data));
    expect(put.sha256).toBe(createHash('sha256').update(data).digest('hex'));
    expect(put.size).toBe(data.length);
    const parts: Buffer[] = [];
    for await (const c of await store.get('weights/model.bin')) parts.push(c as Buffer);
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    const tail: Buffer[] = [];
    for await (const c of await store.get('weights/model.bin', { start: data.length - 10, end: data.length - 1 })) tail.push(c as Buffer);
    expect(Buffer.concat(tail).equals(data.subarray(data.length - 10))).toBe(true);
  });

  it('a sha256 mismatch on a multi-part upload aborts it and leaves no object', async () => {
    const store = await freshStore();
    await expect(store.put('big', chunks(randomBytes(11 * MiB)), { expectedSha256: 'b'.repeat(64) })).rejects.toBeInstanceOf(InvalidInput);
    expect(await store.head('big')).toBeUndefined();
  });

  it('a body that fails after several parts aborts the upload and keeps the old object', async () => {
    const store = await freshStore();
    await store.put('ckpt', chunks(Buffer.from('previous')));
    async function* dropped() {
      yield randomBytes(6 * MiB);
      yield randomBytes(6 * MiB);
      throw new Error('connection dropped');
    }
    await expect(store.put('ckpt', dropped())).rejects.toThrow('connection dropped');
    const back: Buffer[] = [];
    for await (const c of await store.get('ckpt')) back.push(c as Buffer);
    expect(Buffer.concat(back).toString()).toBe('previous');
  });
});
