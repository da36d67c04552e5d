import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { InvalidInput, NotFound } from '../../../src/engines/errors.js';
import type { ObjectStore } from '../../../src/engines/objects/object-store.js';

// The behaviour every object-store driver must show. Each driver's test file calls this
// with a factory for a fresh, empty store (in the manner of hono's common.case.test.ts).

async function* chunks(buf: Buffer, size = 64 * 1024): AsyncIterable<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function* failing(after: Buffer): AsyncIterable<Uint8Array> {
  yield after;
  throw new Error('connection dropped');
}

async function read(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function keys(store: ObjectStore, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out;
}

export function objectStoreContract(name: string, open: () => Promise<ObjectStore>): void {
  describe(`object store contract: ${name}`, () => {
    it('puts a stream and gets the same bytes, with size and sha256', async () => {
      const store = await open();
      const data = randomBytes(300 * 1024 + 7);
      const put = await store.put('blobs/a/one', chunks(data));
      expect(put).toEqual({ key: 'blobs/a/one', size: data.length, sha256: createHash('sha256').update(data).digest('hex') });
      expect(await store.head('blobs/a/one')).toEqual({ key: 'blobs/a/one', size: data.length });
      expect((await read(await store.get('blobs/a/one'))).equals(data)).toBe(true);
    });

    it('stores an empty object', async () => {
      const store = await open();
      const put = await store.put('empty', chunks(Buffer.alloc(0)));
      expect(put.size).toBe(0);
      expect(put.sha256).toBe(createHash('sha256').digest('hex'));
      expect((await read(await store.get('empty'))).length).toBe(0);
    });

    it('serves byte ranges: first byte, last byte, a middle span; refuses one past the end', async () => {
      const store = await open();
      const data = randomBytes(1000);
      await store.put('r', chunks(data, 100));
      expect((await read(await store.get('r', { start: 0, end: 0 }))).equals(data.subarray(0, 1))).toBe(true);
      expect((await read(await store.get('r', { start: 999, end: 999 }))).equals(data.subarray(999))).toBe(true);
      expect((await read(await store.get('r', { start: 100, end: 549 }))).equals(data.subarray(100, 550))).toBe(true);
      await expect(store.get('r', { start: 990, end: 1000 })).rejects.toBeInstanceOf(InvalidInput);
      await expect(store.get('r', { start: 5, end: 4 })).rejects.toBeInstanceOf(InvalidInput);
    });

    it('a sha256 mismatch fails the put and leaves nothing', async () => {
      const store = await open();
      await expect(store.put('bad', chunks(Buffer.from('hello')), { expectedSha256: 'a'.repeat(64) })).rejects.toBeInstanceOf(InvalidInput);
      expect(await store.head('bad')).toBeUndefined();
      expect(await keys(store)).toEqual([]);
      const ok = await store.put('good', chunks(Buffer.from('hello')), { expectedSha256: createHash('sha256').update('hello').digest('hex') });
      expect(ok.size).toBe(5);
    });

    it('a body that fails mid-stream leaves nothing, and an existing object untouched', async () => {
      const store = await open();
      await store.put('k', chunks(Buffer.from('old')));
      await expect(store.put('k', failing(Buffer.from('partial new')))).rejects.toThrow('connection dropped');
      expect((await read(await store.get('k'))).toString()).toBe('old');
      await expect(store.put('fresh', failing(Buffer.from('partial')))).rejects.toThrow();
      expect(await store.head('fresh')).toBeUndefined();
      expect(await keys(store)).toEqual(['k']);
    });

    it('gets of absent keys are NotFound, heads undefined, deletes idempotent', async () => {
      const store = await open();
      await expect(store.get('nope')).rejects.toBeInstanceOf(NotFound);
      expect(await store.head('nope')).toBeUndefined();
      await store.put('x', chunks(Buffer.from('x')));
      await store.delete('x');
      await store.delete('x');
      expect(await store.head('x')).toBeUndefined();
    });

    it('lists by prefix in key order', async () => {
      const store = await open();
      for (const k of ['m/2', 'm/1', 'n/1', 'm/10/a']) await store.put(k, chunks(Buffer.from(k)));
      expect(await keys(store, 'm/')).toEqual(['m/1', 'm/10/a', 'm/2']);
      expect(await keys(store, '')).toHaveLength(4);
      expect(await keys(store, 'zzz')).toEqual([]);
    });

    it('refuses keys that could escape the store', async () => {
      const store = await open();
      for (const k of ['../x', 'a/../../x', '/etc/passwd', 'a//b', 'a/./b', 'nul\0byte', '', 'a\\b']) {
        await expect(store.put(k, chunks(Buffer.from('x'))), JSON.stringify(k)).rejects.toThrow(/invalid object key/);
      }
    });
    it('a conditional put creates only when absent and replaces only the version it read', async () => {
      const store = await open();
      expect(await store.readVersioned('lease')).toBeUndefined();
      const v1 = await store.putIf('lease', Buffer.from('epoch 1'), { ifAbsent: true });
      expect(v1).toBeTypeOf('string');
      expect(await store.putIf('lease', Buffer.from('epoch 1, other node'), { ifAbsent: true })).toBeUndefined();
      const read1 = await store.readVersioned('lease');
      expect(read1).toEqual({ body: Buffer.from('epoch 1'), version: v1 });
      const v2 = await store.putIf('lease', Buffer.from('epoch 2'), { ifVersion: v1! });
      expect(v2).toBeTypeOf('string');
      expect(v2).not.toBe(v1);
      // The stale version loses, and the object keeps the winner's bytes.
      expect(await store.putIf('lease', Buffer.from('epoch 1 again'), { ifVersion: v1! })).toBeUndefined();
      expect((await store.readVersioned('lease'))?.body.toString()).toBe('epoch 2');
      expect(await store.putIf('absent', Buffer.from('x'), { ifVersion: v2! })).toBeUndefined();
      expect(await store.head('absent')).toBeUndefined();
    });

    it('of many racing compare-and-swaps on one version, exactly one wins', async () => {
      const store = await open();
      const base = (await store.putIf('race', Buffer.from('base'), { ifAbsent: true }))!;
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.putIf('race', Buffer.from(`writer ${i}`), { ifVersion: base })));
      const winners = results.flatMap((v, i) => (v === undefined ? [] : [i]));
      expect(winners).toHaveLength(1);
      expect((await store.readVersioned('race'))?.body.toString()).toBe(`writer ${winners[0]}`);
      const creators = await Promise.all(Array.from({ length: 8 }, (_, i) => store.putIf('fresh', Buffer.from(`creator ${i}`), { ifAbsent: true })));
      expect(creators.filter((v) => v !== undefined)).toHaveLength(1);
    });
  });
}
