import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatasetCatalog, datasetMigrations } from '../../../src/engines/datasets/dataset-catalog.js';
import { FsObjectStore } from '../../../src/engines/objects/fs-object-store.js';
import { SqlStore } from '../../../src/engines/sql/sql-store.js';
import { tempDir } from '../../helpers/daemon.js';

const actor = { tokenId: 'tok_test' };

describe('dataset raw files', () => {
  it('two writers of one new name: the one that commits is the one stored, and the refused one changes no byte (review)', async () => {
    const root = tempDir('strata-datasets-');
    const sql = await SqlStore.open(join(root, 'datasets.db'), datasetMigrations);
    const objects = new FsObjectStore(join(root, 'objects'));
    const catalog = new DatasetCatalog(sql.db, sql.changes, sql.writer, objects);
    await catalog.create(actor, 'd1');
    const big = randomBytes(8 * 1024 * 1024);
    const small = Buffer.from('small and first to commit');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow() {
      yield big.subarray(0, 1024 * 1024);
      await gate;
      yield big.subarray(1024 * 1024);
    }
    const slowWriter = catalog.putRawFile(actor, 'd1', 'a.jsonl', slow());
    await new Promise((r) => setTimeout(r, 50));
    await catalog.putRawFile(actor, 'd1', 'a.jsonl', (async function* () { yield small; })());
    release();
    await expect(slowWriter).rejects.toThrow(/already exists/);
    const [f] = catalog.files('d1');
    const chunks: Buffer[] = [];
    for await (const c of await objects.get(f!.key)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(small)).toBe(true);
    // The refused writer's bytes are gone, not left for garbage collection.
    const keys: string[] = [];
    for await (const o of objects.list('datasets/')) keys.push(o.key);
    expect(keys).toEqual([f!.key]);
    await sql.close();
  });
});
