import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb } from 'node:zlib';
import { Packr } from 'msgpackr';
import type { ObjectStore } from '../engines/objects/object-store.js';
import type { ChangeRecord } from '../engines/sql/change-log.js';

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb);

// The layout of a backup target (an object store: a directory by default, MinIO/S3 in
// production), and the only code that reads or writes it.
//
//   snapshots/<store>/<lsn>-<time>/db.sqlite      a consistent copy (VACUUM INTO)
//   snapshots/<store>/<lsn>-<time>/manifest.json  written last: a snapshot without it is incomplete
//   segments/<store>/<first>-<last>-<sha>.seg     gzip'd MessagePack {store, first, last, records}
//
// Numbers are zero-padded so keys sort in LSN order. A segment's key ends with the SHA-256 of
// its uncompressed content, checked on every read: a torn upload, a bit flip or a different
// segment under the same name fails loudly and is never applied. Keys are never overwritten:
// a put to an existing key is skipped (same name = same content, by construction).

const packr = new Packr({ useRecords: false, variableMapSize: true });
const pad = (n: number) => String(n).padStart(20, '0');

export interface SnapshotManifest {
  store: string;
  lsn: number;
  /** Commit time (unix ms) of the snapshot's last record: the instant it represents. */
  time: number;
  sha256: string;
  bytes: number;
  created_at: string;
  /** Derived files saved with the snapshot (vector index files and their sidecars). */
  indexes?: string[];
}

export interface SegmentInfo {
  key: string;
  first: number;
  last: number;
  sha256: string;
}

function userKeyKey(userId: string): string {
  return `keys/users/${Buffer.from(userId, 'utf8').toString('hex')}`;
}

export class BackupCorrupt extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackupCorrupt';
  }
}

export class BackupArchive {
  constructor(readonly objects: ObjectStore) {}

  async putSegment(store: string, records: ChangeRecord[]): Promise<SegmentInfo> {
    const first = records[0]!.lsn;
    const last = records[records.length - 1]!.lsn;
    const raw = packr.pack({ store, first, last, records });
    const sha256 = createHash('sha256').update(raw).digest('hex');
    const key = `segments/${store}/${pad(first)}-${pad(last)}-${sha256.slice(0, 32)}.seg`;
    if (!(await this.objects.head(key))) await this.objects.put(key, bufferSource(await gzip(raw)));
    return { key, first, last, sha256 };
  }

  // User keys live outside the point-in-time history, under keys/users/, and are deleted when
  // their user is erased: a restore to any time installs only the keys that still exist, so
  // an erased user's data stays unreadable in every snapshot and segment (crypto-shredding).
  async putUserKey(userId: string, wrapped: Buffer): Promise<void> {
    await this.objects.put(userKeyKey(userId), bufferSource(wrapped));
  }

  async deleteUserKey(userId: string): Promise<void> {
    await this.objects.delete(userKeyKey(userId));
  }

  /** The users whose key is stored (a listing: no key is read). */
  async userKeyIds(): Promise<Set<string>> {
    const out = new Set<string>();
    for await (const o of this.objects.list('keys/users/')) out.add(Buffer.from(o.key.slice('keys/users/'.length), 'hex').toString('utf8'));
    return out;
  }

  async userKeys(): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    for (const userId of await this.userKeyIds()) out.set(userId, await readAll(await this.objects.get(userKeyKey(userId))));
    return out;
  }

  async segments(store: string): Promise<SegmentInfo[]> {
    const out: SegmentInfo[] = [];
    for await (const o of this.objects.list(`segments/${store}/`)) {
      const m = /\/(\d{20})-(\d{20})-([0-9a-f]{32})\.seg$/.exec(o.key);
      if (m) out.push({ key: o.key, first: Number(m[1]), last: Number(m[2]), sha256: m[3]! });
    }
    return out.sort((a, b) => a.first - b.first || a.last - b.last);
  }

  /** A segment's records, after checking its content against the hash in its name. */
  async readSegment(info: SegmentInfo): Promise<ChangeRecord[]> {
    let raw: Buffer;
    try {
      raw = await gunzip(await readAll(await this.objects.get(info.key)));
    } catch (err) {
      throw new BackupCorrupt(`segment ${info.key} cannot be decompressed (torn upload?): ${(err as Error).message}`);
    }
    if (createHash('sha256').update(raw).digest('hex').slice(0, 32) !== info.sha256) throw new BackupCorrupt(`segment ${info.key} does not match its checksum`);
    const seg = packr.unpack(raw) as { first: number; last: number; records: ChangeRecord[] };
    if (seg.first !== info.first || seg.last !== info.last || seg.records.length !== info.last - info.first + 1) throw new BackupCorrupt(`segment ${info.key} holds other records than its name says`);
    return seg.records;
  }

  async putSnapshot(store: string, file: string, manifest: Omit<SnapshotManifest, 'sha256' | 'bytes' | 'store' | 'created_at' | 'indexes'>, indexes: Array<{ name: string; path: string }> = []): Promise<SnapshotManifest> {
    const dir = `snapshots/${store}/${pad(manifest.lsn)}-${pad(manifest.time)}`;
    // The manifest goes last and makes the snapshot exist; until then the parts are nobody's,
    // so a failure (a full target) takes them away again instead of leaving them unlisted for ever.
    try {
      // Flushed as they go, in steps of 8 MiB: appends beside a snapshot then wait for at most
      // one step's flush at their commits (bench/large-state.ts, snapshot_under_load).
      const paced = { syncEveryBytes: 8 * 1024 * 1024 };
      for (const ix of indexes) await this.objects.put(`${dir}/indexes/${ix.name}`, createReadStream(ix.path), paced);
      const put = await this.objects.put(`${dir}/db.sqlite`, createReadStream(file), paced);
      const full: SnapshotManifest = { store, ...manifest, sha256: put.sha256, bytes: put.size, created_at: new Date().toISOString(), indexes: indexes.map((i) => i.name) };
      await this.objects.put(`${dir}/manifest.json`, bufferSource(Buffer.from(JSON.stringify(full, null, 2))));
      return full;
    } catch (err) {
      for await (const o of this.objects.list(`${dir}/`)) await this.objects.delete(o.key).catch(() => undefined);
      throw err;
    }
  }

  /** Complete snapshots of a store, oldest first. */
  async snapshots(store: string): Promise<Array<SnapshotManifest & { dir: string }>> {
    const out: Array<SnapshotManifest & { dir: string }> = [];
    for await (const o of this.objects.list(`snapshots/${store}/`)) {
      if (!o.key.endsWith('/manifest.json')) continue;
      const m = JSON.parse((await readAll(await this.objects.get(o.key))).toString('utf8')) as SnapshotManifest;
      out.push({ ...m, dir: o.key.slice(0, -'/manifest.json'.length) });
    }
    return out.sort((a, b) => a.lsn - b.lsn);
  }

  /** Where shipping of a store stood at its last check: the restorable end of the window. */
  async readStatus(store: string): Promise<{ lsn: number; checked_at: number } | undefined> {
    if (!(await this.objects.head(`status/${store}.json`))) return undefined;
    return JSON.parse((await readAll(await this.objects.get(`status/${store}.json`))).toString('utf8')) as { lsn: number; checked_at: number };
  }

  async writeStatus(store: string, status: { lsn: number; checked_at: number }): Promise<void> {
    await this.objects.put(`status/${store}.json`, bufferSource(Buffer.from(JSON.stringify(status))));
  }

  async deleteSnapshot(dir: string): Promise<void> {
    // Manifest first: a half-deleted snapshot is then simply incomplete, never half-valid.
    await this.objects.delete(`${dir}/manifest.json`);
    for await (const o of this.objects.list(`${dir}/indexes/`)) await this.objects.delete(o.key);
    await this.objects.delete(`${dir}/db.sqlite`);
  }
}

export async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(parts);
}

/** A whole buffer as the byte stream ObjectStore.put takes. */
export async function* bufferSource(buf: Buffer): AsyncIterable<Uint8Array> {
  yield buf;
}
