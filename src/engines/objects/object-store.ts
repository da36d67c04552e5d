import type { Readable } from 'node:stream';
import { NotFound, ObjectMissing } from '../errors.js';

// One interface for every place blobs live: the local disk (fs driver, the embedded default)
// and MinIO / any S3 (s3 driver, still to come). Keys are chosen by the caller; the registry
// above decides what they mean (content addressing is done there, by sha256, so that no driver
// has to rename or copy after hashing). A put is all or nothing: a key is either absent or
// holds the complete, verified bytes — never a partial object.

export interface PutResult {
  key: string;
  size: number;
  /** Lower-case hex SHA-256 of the bytes written, computed on the stream. */
  sha256: string;
}

export interface PutOptions {
  /** When given, a mismatch fails the put with InvalidInput and leaves nothing behind. */
  expectedSha256?: string;
  /**
   * Drivers writing local files flush every this many bytes instead of once at the end. For
   * bulk copies beside live traffic (backup snapshots): on ext4 a commit's fsync waits for
   * the other files' dirty data, and one 400 MiB flush held appends for a tenth of a second.
   */
  syncEveryBytes?: number;
}

/** Inclusive byte range, as in HTTP `Range: bytes=start-end`. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /** Last write; garbage collection keeps objects younger than its grace period. */
  modified?: Date;
}

/** A small object's bytes with the token a conditional put compares against. */
export interface VersionedObject {
  body: Buffer;
  /** Opaque: an ETag on S3, a content hash on fs. Changes with every write. */
  version: string;
}

/** Create only when absent, or replace only the version read before (compare-and-swap). */
export type PutCondition = { ifAbsent: true } | { ifVersion: string };

/**
 * Optional (the fs driver): one file written in slots, then made an object without copying.
 * Multipart uploads whose parts share one size write each part straight into its place.
 */
export interface SlotFile {
  /**
   * Writes `body` into file `key` (created when absent) at `offset`, never past `offset + max`:
   * a longer body fails (InvalidInput) before a byte lands outside its slot. Durable once it
   * resolves; the sha256 is of the bytes written.
   */
  writeAt(key: string, offset: number, max: number, body: AsyncIterable<Uint8Array>, options?: PutOptions): Promise<PutResult>;
  /**
   * The first `size` bytes of file `from` become object `key`, atomically, and `from` is gone.
   * They are hashed first: an expected sha256 that differs leaves `from` as it was.
   */
  seal(from: string, size: number, key: string, options?: PutOptions): Promise<PutResult>;
}

export interface ObjectStore {
  readonly name: string;
  /** See SlotFile; absent where objects cannot be written in place (S3, sealed stores). */
  readonly slots?: SlotFile;
  put(key: string, body: AsyncIterable<Uint8Array>, options?: PutOptions): Promise<PutResult>;
  /** NotFound when the key is absent. A range must lie inside the object. */
  get(key: string, range?: ByteRange): Promise<Readable>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Deleting an absent key is not an error. */
  delete(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** For small coordination objects (the replication lease); undefined when absent. */
  readVersioned(key: string): Promise<VersionedObject | undefined>;
  /**
   * Writes `body` only if `condition` holds at the store, atomically with respect to every
   * other putIf on the key. Returns the new version, or undefined when the condition failed
   * (another writer got there first). Plain put() does not take part in this.
   */
  putIf(key: string, body: Buffer, condition: PutCondition): Promise<string | undefined>;
  /** Removes what interrupted puts left behind, if the driver can leave anything (fs can). */
  sweepIncomplete?(olderThanMs: number): Promise<number>;
}

/** Keys are slash-separated relative paths of safe segments; anything else is refused. */
export function checkKey(key: string): void {
  if (
    key.length === 0 ||
    key.length > 1024 ||
    key.startsWith('/') ||
    key.includes('\0') ||
    key.includes('\\') ||
    key.split('/').some((s) => s === '' || s === '.' || s === '..')
  ) {
    throw new Error(`invalid object key ${JSON.stringify(key)}`);
  }
}

/**
 * Reads an object that metadata references. Its absence is data loss: `lost` hears of it (a
 * metric and a log line naming the key) and the caller gets ObjectMissing (a 500), never a
 * NotFound that would tell a client the resource does not exist.
 */
export async function getReferenced(store: ObjectStore, key: string, ref: { what: string; tier: string; lost(key: string): void }, range?: ByteRange): Promise<Readable> {
  try {
    return await store.get(key, range);
  } catch (err) {
    if (!(err instanceof NotFound)) throw err;
    ref.lost(key);
    throw new ObjectMissing(ref.what, ref.tier);
  }
}
