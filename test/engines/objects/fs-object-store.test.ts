import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engines/objects/fs-object-store.js';
import { tempDir } from '../../helpers/daemon.js';
import { objectStoreContract } from './object-store.contract.js';

objectStoreContract('fs', async () => new FsObjectStore(tempDir('strata-objects-')));

describe('fs object store', () => {
  it('sweeps temp files a crash left behind, once they are old enough', async () => {
    const root = tempDir('strata-objects-');
    const store = new FsObjectStore(root);
    async function* stalled() {
      yield Buffer.from('partial');
      throw new Error('kill -9 would stop here');
    }
    // Simulate the leftover: a put that died before its cleanup ran.
    await store.put('seed', (async function* () { yield Buffer.from('x'); })());
    const tmp = join(root, '.tmp');
    writeFileSync(join(tmp, 'orphan'), 'partial');
    await expect(store.put('k', stalled())).rejects.toThrow();
    expect(readdirSync(tmp)).toEqual(['orphan']);
    expect(await store.sweepIncomplete(60_000)).toBe(0);
    const old = new Date(Date.now() - 120_000);
    utimesSync(join(tmp, 'orphan'), old, old);
    expect(await store.sweepIncomplete(60_000)).toBe(1);
    expect(readdirSync(tmp)).toEqual([]);
    expect(await store.head('k')).toBeUndefined();
  });

  it('slots: parts written in place in any order, a body past its slot refused, and seal making the object only when the hash agrees', async () => {
    const store = new FsObjectStore(tempDir('strata-objects-'));
    const once = (b: Buffer) => (async function* () { yield b; })();
    const text = async (key: string) => {
      const chunks: Buffer[] = [];
      for await (const c of await store.get(key)) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString();
    };
    await store.slots.writeAt('up/a', 4, 4, once(Buffer.from('efgh')));
    await store.slots.writeAt('up/a', 0, 4, once(Buffer.from('abcd')));
    await expect(store.slots.writeAt('up/a', 8, 4, once(Buffer.from('ijklm')))).rejects.toThrow(/larger than its slot/);
    await store.slots.writeAt('up/a', 8, 4, once(Buffer.from('ij')));
    await expect(store.slots.seal('up/a', 10, 'obj', { expectedSha256: '0'.repeat(64) })).rejects.toThrow(/sha256/);
    expect(await store.head('obj')).toBeUndefined();
    const sealed = await store.slots.seal('up/a', 10, 'obj');
    expect(sealed.size).toBe(10);
    expect(await text('obj')).toBe('abcdefghij');
    expect(await store.head('up/a')).toBeUndefined();
    await expect(store.slots.seal('up/a', 1, 'other')).rejects.toThrow(/does not exist/);
  });

  it('writes bodies of many small chunks and a large one byte-exact, in put and in slots', async () => {
    const store = new FsObjectStore(tempDir('strata-objects-'));
    const chunks = [...Array.from({ length: 1500 }, () => randomBytes(999)), randomBytes(3 * 1024 * 1024), ...Array.from({ length: 700 }, () => randomBytes(1777))];
    const whole = Buffer.concat(chunks);
    const body = () => (async function* () { yield* chunks; })();
    const bytes = async (key: string) => {
      const out: Buffer[] = [];
      for await (const c of await store.get(key)) out.push(c as Buffer);
      return Buffer.concat(out);
    };
    const put = await store.put('whole', body());
    expect(put.sha256).toBe(createHash('sha256').update(whole).digest('hex'));
    expect((await bytes('whole')).equals(whole)).toBe(true);
    await store.slots.writeAt('slotted', 10, whole.length, body());
    expect((await bytes('slotted')).subarray(10).equals(whole)).toBe(true);
  });
});
