import { randomUUID } from 'node:crypto';
import { InvalidInput } from '../errors.js';
import type { ObjectStore, PutResult } from '../objects/object-store.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import { checkSha } from './model-schema.js';

// Blobs before references: a file's bytes are written to the hot tier under a fresh key
// (`blobs/<uuid>`) and verified before the transaction that references them commits. If a
// blob with the same sha256 already exists, the new row points at the existing blob and the
// fresh copy is deleted after the commit — identical content is stored once, without the
// rename-after-hash that S3 cannot do. A crash between the put and the commit leaves an
// unreferenced object, which garbage collection removes; never a row without its bytes.

export interface StoredBlob {
  sha256: string;
  size: number;
  /** Where the bytes live: the fresh key, or an existing blob's when the content was stored already. */
  key: string;
}

export class BlobWriter {
  /** Keys of blobs being written by this node whose rows have not committed yet. */
  private readonly writing = new Set<string>();

  constructor(
    private readonly db: SqlDatabase,
    private readonly writer: Writer,
    private readonly store: ObjectStore,
  ) {}

  /** Streams `body` into a fresh blob, then runs `record` (see write). */
  put(actor: Actor, body: AsyncIterable<Uint8Array>, expectedSha256: string | undefined, record: (tx: Tx, blob: StoredBlob) => void): Promise<{ sha256: string; size: number }> {
    checkSha(expectedSha256);
    return this.write(actor, (key) => this.store.put(key, body, expectedSha256 ? { expectedSha256 } : {}), expectedSha256, record);
  }

  /**
   * `produce` fills the fresh key (a streamed put, or a multipart upload's assembly file sealed
   * into place); then `record` runs in a write transaction with the blob's sha256, size and the
   * key its bytes live under. `record` inserts the blob row (INSERT OR IGNORE) and whatever
   * references it. When `record` throws, the fresh object is deleted.
   */
  async write(
    actor: Actor,
    produce: (key: string) => Promise<PutResult>,
    expectedSha256: string | undefined,
    record: (tx: Tx, blob: StoredBlob) => void,
    /** A key of the caller's (blobs/…) instead of a fresh one: a sealed upload's, findable after a crash. */
    fixedKey?: string,
  ): Promise<{ sha256: string; size: number }> {
    const key = fixedKey ?? `blobs/${randomUUID()}`;
    // Until its row commits, the object looks like an orphan to garbage collection.
    this.writing.add(key);
    let put: PutResult;
    try {
      put = await produce(key);
      if (expectedSha256 && put.sha256 !== expectedSha256.toLowerCase()) throw new InvalidInput(`the content's sha256 is ${put.sha256}, not the ${expectedSha256} the client declared`);
    } catch (err) {
      await this.store.delete(key).catch(() => undefined);
      this.writing.delete(key);
      throw err;
    }
    let duplicate = false;
    try {
      await this.writer.write(actor, (tx) => {
        const existing = this.db.prepare<{ key: string }>('SELECT key FROM blobs WHERE sha256 = ?').get(put.sha256);
        duplicate = existing !== undefined;
        record(tx, { sha256: put.sha256, size: put.size, key: existing?.key ?? key });
      });
    } catch (err) {
      await this.store.delete(key).catch(() => undefined);
      throw err;
    } finally {
      this.writing.delete(key);
    }
    if (duplicate) await this.store.delete(key).catch(() => undefined);
    return { sha256: put.sha256, size: put.size };
  }

  /** Whether this node is writing `key` now (garbage collection must leave it). */
  isWriting(key: string): boolean {
    return this.writing.has(key);
  }
}
