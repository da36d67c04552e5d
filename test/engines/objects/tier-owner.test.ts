import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engines/objects/fs-object-store.js';
import { deletingOnlyWhenOwned, OWNER_KEY, TierOwner } from '../../../src/engines/objects/tier-owner.js';
import { tempDir } from '../../helpers/daemon.js';

const bytes = (s: string) => (async function* () {
  yield Buffer.from(s);
})();

describe('tier ownership', () => {
  it('the first primary claims a tier; another cluster on it deletes nothing until it adopts the tier', async () => {
    const store = new FsObjectStore(tempDir());
    const source = new TierOwner('hot', store, { clusterId: () => 'cluster-a', nodeId: 'n1' });
    const copy = new TierOwner('hot', store, { clusterId: () => 'cluster-b', nodeId: 'n2' });
    // A replica (claim: false) never claims; a primary does, exactly once.
    expect(await copy.load(false)).toBeUndefined();
    expect((await source.load(true))?.cluster_id).toBe('cluster-a');
    expect((await copy.load(true))?.cluster_id).toBe('cluster-a');
    expect(source.owned()).toBe(true);
    expect(copy.owned()).toBe(false);

    const skipped: string[] = [];
    const asCopy = deletingOnlyWhenOwned(store, copy, (k) => skipped.push(k));
    await store.put('blobs/x', bytes('x'));
    await asCopy.delete('blobs/x');
    expect(await store.head('blobs/x')).toBeDefined();
    expect(skipped).toEqual(['blobs/x']);
    expect(copy.refusal().message).toMatch(/belongs to cluster cluster-a/);

    await copy.adopt();
    expect(copy.owned()).toBe(true);
    await asCopy.delete('blobs/x');
    expect(await store.head('blobs/x')).toBeUndefined();
    // The former owner sees the new marker the next time it looks, and stops deleting.
    await source.load(true);
    expect(source.owned()).toBe(false);
    expect(JSON.parse((await store.readVersioned(OWNER_KEY))!.body.toString()).cluster_id).toBe('cluster-b');
  });
});
