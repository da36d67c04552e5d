import type { Actor } from '../../../engines/sql/writer.js';

// One S3 bucket over one of Strata's stores (model-bucket.ts for models). The S3 app does the
// protocol — auth, listing with prefixes, delimiters and pages, ranges, checksums, XML — and a
// bucket only maps keys to its store, so each store's rules (open versus final versions,
// aliases) stay in the store.

export interface S3Object {
  key: string;
  size: number;
  /** Unquoted. */
  etag: string;
  /** ISO 8601. */
  lastModified: string;
}

/** An object found, with the store's own way to read it (models and checkpoints through the model cache). */
export interface ObjectLocation extends S3Object {
  open(range?: { start: number; end: number }): Promise<import('node:stream').Readable>;
  /** For HEAD: that the bytes are there, without reading them. */
  check(): Promise<void>;
}

/** What the S3 app knows of a part's body besides its bytes. */
export interface PartBody {
  /** The signed payload's SHA-256, checked by the store as it writes. */
  expectedSha256: string | undefined;
  /** The decoded length the request declared, when it did (lets the part be written in place). */
  length: number | undefined;
  /** The part's MD5, hex, once the body has been read (its ETag). */
  md5: () => string | undefined;
}

/** Multipart uploads of one bucket: where the bytes wait until completed (the store's upload sessions). */
export interface S3Multipart {
  startMultipart(actor: Actor, key: string): Promise<string>;
  putPart(actor: Actor, key: string, uploadId: string, part: number, body: AsyncIterable<Uint8Array>, part_: PartBody): Promise<{ size: number }>;
  /** The parts stored, ascending, each with its MD5 (hex; null for a part the native API sent). */
  listParts(key: string, uploadId: string): Promise<Array<{ part: number; size: number; md5: string | null }>>;
  /** Joins the listed parts (ascending) into the object and records `etag`. */
  completeMultipart(actor: Actor, key: string, uploadId: string, parts: number[], etag: string): Promise<S3Object>;
  abortMultipart(actor: Actor, key: string, uploadId: string): Promise<void>;
  /** The object a completion of this upload made lately, for a retry whose first answer was lost. */
  completedUpload(key: string, uploadId: string): S3Object | undefined;
}

export interface S3Bucket {
  readonly name: string;
  /** Who may read (auth.ts): `read` for stores any token reads, `shared` where user tokens may not. */
  readonly readAccess: 'read' | 'shared';
  readonly createdAt: string;
  /**
   * Keys starting with `prefix`, sorted by key. Every key after `after` must be there up to
   * `limit` of them when there is no delimiter (a bucket may return more); with a delimiter a
   * bucket may return one key for each prefix the listing folds into.
   */
  list(prefix: string, delimiter: string | undefined, after?: string, limit?: number): S3Object[];
  /** NoSuchKey when absent. */
  locate(key: string): ObjectLocation;
  /** Stores a body (already checked by the caller's wrappers); refused where the store is read-only. */
  put(actor: Actor, key: string, body: AsyncIterable<Uint8Array>, etag: () => string | undefined, expectedSha256: string | undefined): Promise<S3Object>;
  /** Multipart uploads, over the store's upload sessions (s3-multipart.ts). */
  readonly multipart: S3Multipart;
  // The rest is optional: a bucket without one answers NotImplemented saying so (s3-app.ts).
  /** Removes an object where the store allows it; absent is not an error (S3 answers 204). */
  delete?(actor: Actor, key: string): Promise<void>;
  /** Copies within the bucket (by reference where the store can). */
  copy?(actor: Actor, from: string, to: string): Promise<S3Object>;
}

/**
 * S3's key order: UTF-8 bytes, which is code point order. JavaScript's < compares UTF-16 code
 * units, which puts U+10000 and above (surrogates) before U+E000–U+FFFF (review); SQLite's
 * BINARY collation compares UTF-8 bytes, like this.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    // Only when a surrogate meets a non-surrogate at or above U+E000 does code-unit order differ.
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys && (xs ? y : x) >= 0xe000) return xs ? 1 : -1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}
