import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engines/objects/fs-object-store.js';
import type { ObjectStore } from '../../../src/engines/objects/object-store.js';
import { ModelRegistry, modelMigrations } from '../../../src/engines/models/model-registry.js';
import { SqlStore } from '../../../src/engines/sql/sql-store.js';
import { tempDir } from '../../helpers/daemon.js';

// Resumable uploads against a real SQLite file and a real fs object tier: where parts are put
// (in place in the assembly file, or each on its own), and that every way of completing gives
// the bytes that were sent — whatever order, re-sends, failures and races the parts met.

const actor = { tokenId: 'tok_test' };
const W = { kind: 'model' as const, owner: 'm', path: 'w.bin' };
const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const once = (b: Buffer) => (async function* () { yield b; })();

async function open(wrap: (s: ObjectStore) => ObjectStore = (s) => s) {
  const root = tempDir('strata-uploads-');
  const sql = await SqlStore.open(join(root, 'models.db'), modelMigrations);
  const raw = new FsObjectStore(join(root, 'objects'));
  const models = new ModelRegistry(sql.db, sql.changes, sql.writer, wrap(raw));
  await models.putModel(actor, 'm', {});
  await models.createVersion(actor, 'm', { version: 'v1' });
  const { upload_id } = await models.uploads.start(actor, 'm', 'v1', 'w.bin');
  const put = (part: number, body: Buffer, length: number | null = body.length) => models.uploads.putPart(actor, W, upload_id, part, once(body), { length: length ?? undefined, md5: () => md5(body) });
  const read = async () => {
    const f = models.locateFile('m', 'v1', 'w.bin');
    const chunks: Buffer[] = [];
    for await (const c of await models.openFile(f)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };
  const keys = () => sql.db.prepare<{ part: number; key: string }>('SELECT part, key FROM model_upload_parts WHERE upload_id = ? ORDER BY part').all(upload_id).map((r) => `${r.part}:${r.key.endsWith('/assembly') ? 'slot' : 'own'}`);
  const files = async () => {
    const out: string[] = [];
    for await (const o of raw.list(`uploads/${upload_id}/`)) out.push(o.key);
    return out;
  };
  return { root, sql, models, upload_id, put, read, keys, files };
}

describe('resumable uploads', () => {
  it('parts of one size, sent out of order, go into their slots, and completing renames the assembly into the blob', async () => {
    const t = await open();
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(1234)];
    for (const i of [2, 0, 3, 1]) await t.put(i + 1, parts[i]!);
    expect(t.keys()).toEqual(['1:slot', '2:slot', '3:slot', '4:slot']);
    const whole = Buffer.concat(parts);
    const listed = await t.models.uploads.listParts(W, t.upload_id);
    expect(listed.parts.map((p) => [p.part, p.size, p.md5])).toEqual(parts.map((p, i) => [i + 1, p.length, md5(p)]));
    const assembly = statSync(join(t.root, 'objects', 'uploads', t.upload_id, 'assembly')).ino;
    expect(await t.models.uploads.complete(actor, W, t.upload_id, sha(whole))).toEqual({ path: 'w.bin', size: whole.length, sha256: sha(whole) });
    expect((await t.read()).equals(whole)).toBe(true);
    // Renamed, not copied: the blob is the assembly file itself, cut to size.
    const blob = statSync(join(t.root, 'objects', ...t.models.locateFile('m', 'v1', 'w.bin').key.split('/')));
    expect([blob.ino, blob.size]).toEqual([assembly, whole.length]);
    expect(await t.files()).toEqual([]);
    expect(t.sql.db.prepare('SELECT count(*) AS n FROM model_upload_parts').get()).toEqual({ n: 0 });
    await t.sql.close();
  });

  it('a part sent again while its slot is recorded is stored on its own, and the last one sent wins', async () => {
    const t = await open();
    const a = randomBytes(5 * MiB);
    const b1 = randomBytes(5 * MiB);
    const b2 = randomBytes(5 * MiB);
    await t.put(1, a);
    await t.put(2, b1);
    await t.put(2, b2);
    expect(t.keys()).toEqual(['1:slot', '2:own']);
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat([a, b2]))).toBe(true);
    await t.sql.close();
  });

  it('parts of unknown length, of differing sizes, or with gaps are joined by copying, with the same bytes', async () => {
    const t = await open();
    const parts = [randomBytes(6 * MiB), randomBytes(7 * MiB), randomBytes(5 * MiB)];
    await t.put(1, parts[0]!);
    await t.put(2, parts[1]!); // longer than the stripe part 1 fixed
    await t.put(3, parts[2]!, null); // no declared length
    expect(t.keys()).toEqual(['1:slot', '2:own', '3:own']);
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat(parts))).toBe(true);
    // S3's way: parts 1 and 3 only, a gap in the numbers.
    const u = await t.models.uploads.start(actor, 'm', 'v1', 'gap.bin');
    const p = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(10)];
    for (const [i, body] of p.entries()) await t.models.uploads.putPart(actor, { ...W, path: 'gap.bin' }, u.upload_id, i + 1, once(body), { length: body.length });
    await t.models.uploads.complete(actor, { ...W, path: 'gap.bin' }, u.upload_id, undefined, { parts: [1, 3], etag: 'x-2' });
    const f = t.models.locateFile('m', 'v1', 'gap.bin');
    expect(f.sha256).toBe(sha(Buffer.concat([p[0]!, p[2]!])));
    await t.sql.close();
  });

  it('a part that dies halfway leaves no row, and its slot takes the part when it is sent again', async () => {
    const t = await open();
    const a = randomBytes(5 * MiB);
    const b = randomBytes(5 * MiB);
    async function* dies() {
      yield b.subarray(0, MiB);
      throw new Error('connection reset');
    }
    await t.put(1, a);
    await expect(t.models.uploads.putPart(actor, W, t.upload_id, 2, dies(), { length: b.length })).rejects.toThrow('connection reset');
    expect(t.keys()).toEqual(['1:slot']);
    await t.put(2, b);
    expect(t.keys()).toEqual(['1:slot', '2:slot']);
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat([a, b]))).toBe(true);
    await t.sql.close();
  });

  it('a body longer than it declared never writes past its slot', async () => {
    const t = await open();
    const a = randomBytes(5 * MiB);
    const c = randomBytes(5 * MiB);
    await t.put(1, a);
    await t.put(3, c);
    await expect(t.put(2, randomBytes(5 * MiB + 1), 5 * MiB)).rejects.toThrow(/larger than its slot/);
    const b = randomBytes(5 * MiB);
    await t.put(2, b);
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat([a, b, c]))).toBe(true);
    await t.sql.close();
  });

  it('a wrong declared sha256 at completion stores nothing and leaves the parts for another try', async () => {
    const t = await open();
    const a = randomBytes(5 * MiB);
    await t.put(1, a);
    await expect(t.models.uploads.complete(actor, W, t.upload_id, '0'.repeat(64))).rejects.toThrow(/sha256/);
    expect(() => t.models.locateFile('m', 'v1', 'w.bin')).toThrow(/no file/);
    await t.models.uploads.complete(actor, W, t.upload_id, sha(a));
    expect((await t.read()).equals(a)).toBe(true);
    await t.sql.close();
  });

  it('a part that lands after an abort is not recorded, and abort removes every object of the upload', async () => {
    const t = await open();
    await t.put(1, randomBytes(5 * MiB));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* late() {
      yield randomBytes(MiB);
      await gate;
      yield randomBytes(MiB);
    }
    const pending = t.models.uploads.putPart(actor, W, t.upload_id, 2, late(), { length: 2 * MiB });
    await t.models.uploads.abort(actor, W, t.upload_id);
    release();
    await expect(pending).rejects.toThrow(/aborted or completed meanwhile/);
    expect(t.sql.db.prepare('SELECT count(*) AS n FROM model_upload_parts').get()).toEqual({ n: 0 });
    // What the late part wrote is garbage collection's, once past its grace period.
    await t.models.gc.collect(actor, 0);
    expect(await t.files()).toEqual([]);
    await t.sql.close();
  });

  it('where the tier cannot write in place (an S3 or sealed tier), every part is its own object', async () => {
    const t = await open((s) => ({ ...s, name: s.name, put: s.put.bind(s), get: s.get.bind(s), head: s.head.bind(s), delete: s.delete.bind(s), list: s.list.bind(s), readVersioned: s.readVersioned.bind(s), putIf: s.putIf.bind(s), slots: undefined }));
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB)];
    await t.put(1, parts[0]!);
    await t.put(2, parts[1]!);
    expect(t.keys()).toEqual(['1:own', '2:own']);
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat(parts))).toBe(true);
    await t.sql.close();
  });

  it('a completion that meets a finalized version stores nothing and the upload is gone, not left pointing at lost parts', async () => {
    const t = await open();
    await t.put(1, randomBytes(5 * MiB));
    await t.models.finalize(actor, 'm', 'v1');
    await expect(t.models.uploads.complete(actor, W, t.upload_id)).rejects.toThrow(/finalized/);
    expect(t.models.uploads.find(t.upload_id)).toBeUndefined();
    expect(t.sql.db.prepare("SELECT count(*) AS n FROM blobs").get()).toEqual({ n: 0 });
    await t.sql.close();
  });

  it('a stripe claimed by a part still in flight outlives a completion that failed meanwhile: no later part overlaps it (review)', async () => {
    const t = await open();
    const small = randomBytes(MiB);
    const b = randomBytes(8 * MiB);
    const c = randomBytes(6 * MiB);
    await t.put(1, small); // below the smallest stripe: its own object
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow() {
      yield b.subarray(0, MiB);
      await gate;
      yield b.subarray(MiB);
    }
    const second = t.models.uploads.putPart(actor, W, t.upload_id, 2, slow(), { length: b.length });
    await new Promise((r) => setTimeout(r, 50));
    await expect(t.models.uploads.complete(actor, W, t.upload_id, '0'.repeat(64))).rejects.toThrow(/sha256/);
    await t.put(3, c);
    release();
    await second;
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat([small, b, c]))).toBe(true);
    await t.sql.close();
  });

  it('two completions of one upload at once: the second waits for the first and gets its answer; a late retry gets it too', async () => {
    const t = await open();
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(100)];
    for (const [i, p] of parts.entries()) await t.put(i + 1, p);
    const [a, b] = await Promise.all([t.models.uploads.complete(actor, W, t.upload_id), t.models.uploads.complete(actor, W, t.upload_id)]);
    expect(b).toEqual(a);
    expect((await t.read()).equals(Buffer.concat(parts))).toBe(true);
    expect(t.models.uploads.recent(W, t.upload_id)?.entry).toEqual(a);
    expect(t.models.uploads.recent({ ...W, path: 'other.bin' }, t.upload_id)).toBeUndefined();
    await t.sql.close();
  });

  it('a node that died between sealing the assembly and the commit completes from the sealed file on the next try', async () => {
    const t = await open();
    const parts = [randomBytes(5 * MiB), randomBytes(3 * MiB)];
    for (const [i, p] of parts.entries()) await t.put(i + 1, p);
    // What the crash leaves: the assembly renamed to blobs/upload-<id>, no blob row.
    mkdirSync(join(t.root, 'objects', 'blobs'), { recursive: true });
    renameSync(join(t.root, 'objects', 'uploads', t.upload_id, 'assembly'), join(t.root, 'objects', 'blobs', `upload-${t.upload_id}`));
    // Garbage collection leaves it while the upload lives.
    await t.models.gc.collect(actor, 0);
    await t.models.uploads.complete(actor, W, t.upload_id);
    expect((await t.read()).equals(Buffer.concat(parts))).toBe(true);
    await t.sql.close();
  });

  it('a stream sink commits only while the session is open: an abort that won keeps nothing', async () => {
    const t = await open();
    await t.put(1, randomBytes(100));
    let kept = false;
    const sink = {
      consume: async (a: typeof actor, body: AsyncIterable<Uint8Array>, _s: unknown, inCommit: (tx: never, stored: { size: number; sha256: string }) => void) => {
        for await (const _ of body) void _;
        await t.models.uploads.abort(actor, W, t.upload_id);
        await t.sql.writer.write(a, (tx) => {
          inCommit(tx as never, { size: 100, sha256: '0'.repeat(64) });
          kept = true;
        });
        return { size: 100, sha256: '0'.repeat(64) };
      },
    };
    await expect(t.models.uploads.complete(actor, W, t.upload_id, undefined, undefined, sink)).rejects.toThrow(/aborted or completed meanwhile/);
    expect(kept).toBe(false);
    await t.sql.close();
  });
});
