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
});
