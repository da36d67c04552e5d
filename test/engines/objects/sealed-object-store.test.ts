import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecryptionFailed } from '../../../src/engines/crypto/aead.js';
import { HEADER, PACKAGE, Sealer } from '../../../src/engines/crypto/sealed-stream.js';
import { FsObjectStore } from '../../../src/engines/objects/fs-object-store.js';
import { S3ObjectStore } from '../../../src/engines/objects/s3-object-store.js';
import { SealedObjectStore } from '../../../src/engines/objects/sealed-object-store.js';
import { tempDir } from '../../helpers/daemon.js';
import { testKeyWrapper } from '../../helpers/keys.js';
import { startS3rver } from '../../helpers/s3rver.js';
import { objectStoreContract } from './object-store.contract.js';

let s3: Awaited<ReturnType<typeof startS3rver>>;
let n = 0;
beforeAll(async () => {
  s3 = await startS3rver([]);
});
afterAll(() => s3.close());

objectStoreContract('sealed fs', async () => new SealedObjectStore(new FsObjectStore(tempDir()), new Sealer(testKeyWrapper())));
objectStoreContract('sealed s3 (s3rver)', async () => {
  const inner = new S3ObjectStore({ client: s3.client, bucket: `sealed-${++n}`, partSize: 5 * 1024 * 1024 });
  await inner.ensureBucket();
  return new SealedObjectStore(inner, new Sealer(testKeyWrapper()));
});

async function read(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

function sealedFs() {
  const root = tempDir();
  return { root, store: new SealedObjectStore(new FsObjectStore(root), new Sealer(testKeyWrapper())) };
}

const rawPath = (root: string, key: string) => join(root, ...key.split('/'));

describe('sealed objects', () => {
  it('range reads are exact at and across every package boundary', async () => {
    const { store } = sealedFs();
    for (const size of [0, 1, PACKAGE - 1, PACKAGE, PACKAGE + 1, 3 * PACKAGE + 100]) {
      const data = randomBytes(size);
      await store.put(`o${size}`, [data]);
      expect((await store.head(`o${size}`))?.size, `size ${size}`).toBe(size);
      expect((await read(await store.get(`o${size}`))).equals(data), `whole ${size}`).toBe(true);
      const edges = [0, PACKAGE - 1, PACKAGE, PACKAGE + 1, 2 * PACKAGE - 1, 2 * PACKAGE, 3 * PACKAGE, size - 1].filter((x) => x >= 0 && x < size);
      for (const a of edges) {
        for (const b of edges) {
          if (b < a) continue;
          const got = await read(await store.get(`o${size}`, { start: a, end: b }));
          expect(got.equals(data.subarray(a, b + 1)), `size ${size} range ${a}-${b}`).toBe(true);
        }
      }
    }
  });

  it('the driver holds only ciphertext', async () => {
    const { root, store } = sealedFs();
    const marker = 'MARKER-7f3a9c-plaintext';
    await store.put('doc', [Buffer.from(marker.repeat(5000))]);
    expect(readFileSync(rawPath(root, 'doc')).includes(marker)).toBe(false);
  });

  it('a flipped bit fails authentication for the package it is in, and only that one', async () => {
    const { root, store } = sealedFs();
    const data = randomBytes(3 * PACKAGE);
    await store.put('t', [data]);
    const file = rawPath(root, 't');
    const raw = readFileSync(file);
    raw[HEADER + (PACKAGE + 16) + 10]! ^= 1; // inside package 1
    writeFileSync(file, raw);
    await expect(read(await store.get('t', { start: PACKAGE, end: PACKAGE + 5 }))).rejects.toBeInstanceOf(DecryptionFailed);
    await expect(read(await store.get('t'))).rejects.toBeInstanceOf(DecryptionFailed);
    // Packages 0 and 2 still open: a range read decrypts only what it touches.
    expect((await read(await store.get('t', { start: 0, end: PACKAGE - 1 }))).equals(data.subarray(0, PACKAGE))).toBe(true);
    expect((await read(await store.get('t', { start: 2 * PACKAGE, end: 3 * PACKAGE - 1 }))).equals(data.subarray(2 * PACKAGE))).toBe(true);
  });

  it('reordered packages and an object cut at a package boundary fail', async () => {
    const { root, store } = sealedFs();
    await store.put('r', [randomBytes(3 * PACKAGE)]);
    const file = rawPath(root, 'r');
    const raw = readFileSync(file);
    const p = (i: number) => raw.subarray(HEADER + i * (PACKAGE + 16), HEADER + (i + 1) * (PACKAGE + 16));
    writeFileSync(file, Buffer.concat([raw.subarray(0, HEADER), p(1), p(0), p(2)]));
    await expect(read(await store.get('r', { start: 0, end: 10 }))).rejects.toBeInstanceOf(DecryptionFailed);
    // Dropping the last package leaves a shorter object whose new last package is not marked final.
    writeFileSync(file, Buffer.concat([raw.subarray(0, HEADER), p(0), p(1)]));
    await expect(read(await store.get('r'))).rejects.toBeInstanceOf(DecryptionFailed);
  });

  it('another key cannot open the object', async () => {
    const root = tempDir();
    await new SealedObjectStore(new FsObjectStore(root), new Sealer(testKeyWrapper())).put('k', [Buffer.from('secret')]);
    const other = new SealedObjectStore(new FsObjectStore(root), new Sealer(testKeyWrapper()));
    await expect(other.get('k')).rejects.toBeInstanceOf(DecryptionFailed);
  });

  it('a sealed file on disk is the plaintext size plus a header and 16 bytes per package', async () => {
    const { root, store } = sealedFs();
    await store.put('s', [randomBytes(2 * PACKAGE + 1)]);
    expect(statSync(rawPath(root, 's')).size).toBe(HEADER + 2 * PACKAGE + 1 + 3 * 16);
    expect(readdirSync(root)).toContain('s');
  });
});
