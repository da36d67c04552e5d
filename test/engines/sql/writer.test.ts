import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidInput } from '../../../src/engines/errors.js';
import { SqlStore } from '../../../src/engines/sql/sql-store.js';
import { tempDir } from '../../helpers/daemon.js';

const migrations = [{ engine: 'test', version: 1, name: 'items', sql: 'CREATE TABLE items (n INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT' }];

async function open(path: string, commits: number[] = []) {
  const store = await SqlStore.open(path, migrations, { onCommit: (i) => commits.push(i.calls) });
  const put = store.changes.define<{ n: number; v: string }>('test', 'put', (db, p) => {
    db.prepare('INSERT INTO items (n, v) VALUES (?, ?)').run(p.n, p.v);
  });
  return { store, put };
}

describe('group-commit writer', () => {
  it('batches concurrent writes into few transactions, all durable, LSNs in call order', async () => {
    const path = join(tempDir(), 'w.db');
    const commits: number[] = [];
    const { store, put } = await open(path, commits);
    const actor = { tokenId: 't' };
    const lsns = await Promise.all(
      Array.from({ length: 500 }, (_, i) => store.writer.write(actor, (tx) => tx.apply(put, { n: i, v: `v${i}` }))),
    );
    // One call's LSN is strictly greater than the LSN of every call made before it.
    for (let i = 1; i < lsns.length; i++) expect(lsns[i]!).toBeGreaterThan(lsns[i - 1]!);
    expect(commits.reduce((a, b) => a + b, 0)).toBe(500);
    expect(commits.length).toBeLessThan(10);
    expect(Math.max(...commits)).toBeGreaterThan(1);
    await store.close();

    // Reopen the file: every acknowledged write is there, with one change-log record each.
    const again = await open(path);
    expect(again.store.db.prepare<{ c: number }>('SELECT count(*) AS c FROM items').get()!.c).toBe(500);
    const log = again.store.changes.readAfter(0, 1000);
    expect(log.filter((r) => r.engine === 'test')).toHaveLength(500);
    expect(log.filter((r) => r.engine === 'test').map((r) => (r.payload as { n: number }).n)).toEqual([...Array(500).keys()]);
    expect(again.store.writer.lastLsn).toBe(lsns[499]);
    await again.store.close();
  });

  it('a failing call rolls back only itself; its batch-mates commit', async () => {
    const { store, put } = await open(join(tempDir(), 'f.db'));
    const actor = { tokenId: 't' };
    const results = await Promise.allSettled([
      store.writer.write(actor, (tx) => tx.apply(put, { n: 1, v: 'a' })),
      store.writer.write(actor, (tx) => {
        tx.apply(put, { n: 2, v: 'b' });
        throw new InvalidInput('no');
      }),
      store.writer.write(actor, (tx) => tx.apply(put, { n: 1, v: 'duplicate key' })),
      store.writer.write(actor, (tx) => tx.apply(put, { n: 3, v: 'c' })),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(InvalidInput);
    expect(store.db.prepare<{ n: number }>('SELECT n FROM items ORDER BY n').all().map((r) => r.n)).toEqual([1, 3]);
    // The change log holds exactly the committed changes, without gaps.
    const log = store.changes.readAfter(0);
    expect(log.map((r) => (r.payload as { n: number }).n)).toEqual([1, 3]);
    expect(log[1]!.lsn).toBe(log[0]!.lsn + 1);
    await store.close();
  });

  it('refuses an async write function and writes after close', async () => {
    const { store, put } = await open(join(tempDir(), 'a.db'));
    await expect(store.writer.write({ tokenId: 't' }, (async () => undefined) as never)).rejects.toThrow(/synchronous/);
    await store.close();
    await expect(store.writer.write({ tokenId: 't' }, (tx) => tx.apply(put, { n: 9, v: 'x' }))).rejects.toThrow(/shutting down/);
  });

  it('change-log times never go backwards', async () => {
    const { store, put } = await open(join(tempDir(), 't.db'));
    const realNow = Date.now;
    try {
      await store.writer.write({ tokenId: 't' }, (tx) => tx.apply(put, { n: 1, v: 'a' }));
      Date.now = () => realNow() - 60_000; // the wall clock steps back a minute
      await store.writer.write({ tokenId: 't' }, (tx) => tx.apply(put, { n: 2, v: 'b' }));
    } finally {
      Date.now = realNow;
    }
    const [a, b] = store.changes.readAfter(0);
    expect(b!.time).toBeGreaterThanOrEqual(a!.time);
    await store.close();
  });
});
