import crypto, { createHash } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { openDatabase, type SqlDatabase, type SqlValue } from '../sql/database.js';
import { isSpace } from './text-steps.js';
import { InsufficientStorage, isOutOfSpace } from '../errors.js';

// Duplicate detection for a pipeline run. Exact duplicates are found by the SHA-1 of the
// case-folded normalized text. Near duplicates by MinHash over word 3-gram shingles (64 hash
// functions, each a multiply by an odd constant and an xor-shift of the shingle hash xor a
// per-function seed: cheap, and the high bits that decide a minimum mix well), bucketed by LSH
// into 8 bands of 8 rows — a pair with Jaccard similarity s shares a bucket with probability
// 1 - (1 - s^8)^8, ≈ 0.87 at s = 0.8, 0.99 at s = 0.9 and 0.03 at s = 0.5 — and a candidate
// counts only if its signatures agree on at least `threshold` of the 64 functions (the
// estimate of their Jaccard similarity, ± 0.05 at 0.8). The first occurrence is kept.
//
// State lives in typed-array hash tables in memory up to a byte budget; past it, everything
// in memory is spilled to a scratch SQLite file in one transaction and memory starts again
// empty, so a multi-GB input needs disk, not RAM. A Bloom filter of the spilled keys (a
// quarter of the budget, fixed) keeps the disk out of nearly every lookup: most rows are
// first occurrences whose keys were never spilled. Until 0.13 every row ran eight SELECTs and
// nine INSERTs against that file: 30 % of a job's CPU.
//
// The answers do not depend on the budget: memory always holds the most recent rows, so a
// bucket's "most recent CANDIDATES" are read from memory first and then from disk.

const HASHES = 64;
const BANDS = 8;
const ROWS = HASHES / BANDS;
const HASH_BYTES = 20;
/** Memory per row: its hash and two slots; with near duplicates, 8 LSH entries (key, row, link) with two slots each, and the signature. */
const EXACT_ROW_BYTES = HASH_BYTES + 8;
const NEAR_ROW_BYTES = BANDS * (16 + 8) + HASHES * 4;
/** Earlier rows compared per LSH bucket (ordinary text rarely shares a bucket with more). */
const CANDIDATES = 32;
const SEEDS = Uint32Array.from({ length: HASHES }, (_, i) => fmix32(0x9e3779b9 ^ Math.imul(i + 1, 0x85ebca6b)));
const MULTIPLIERS = Uint32Array.from({ length: HASHES }, (_, i) => fmix32(0x7f4a7c15 + i) | 1);
// The same bits as int32: read from a Uint32Array, values past 2^31 are doubles, converted
// again at every use in the inner loop (xor and imul take int32s either way).
const SEEDS_I32 = new Int32Array(SEEDS.buffer);
const MULTIPLIERS_I32 = new Int32Array(MULTIPLIERS.buffer);
/** The default budget for one job's tables in memory. */
export const DEFAULT_DEDUP_MEMORY_BYTES = 32 * 1024 * 1024;

/** What duplicate detection needs of a row: the hash of its key and, for near duplicates, its MinHash and LSH keys. */
export interface Fingerprint {
  hash: Uint8Array;
  signature?: Uint32Array | undefined;
  /** The signature's 8 LSH keys: a band's bucket hash with the band number in the low bits. */
  bands?: Float64Array | undefined;
}

export class DuplicateFinder {
  private readonly exact: ExactTable;
  private readonly lsh: BucketTable;
  /** Signatures of the rows in memory, HASHES per row, row `base + i` at `i`. */
  private readonly sigs: Uint32Array;
  private sigRows = 0;
  /** Row numbers below this were spilled. */
  private base = 0;
  private nextRow = 0;
  private db: SqlDatabase | undefined;
  /** Scratch lists of one lookup: a bucket's candidates, and the rows compared so far (at most BANDS × CANDIDATES). */
  private readonly found: number[] = [];
  private readonly seen: number[] = [];
  private bloom: Bloom | undefined;
  /** Times memory was spilled to disk, and disk lookups made (for tests and logs). */
  spills = 0;
  diskLookups = 0;

  /**
   * `threshold` undefined: exact duplicates only. `memoryBytes` bounds the tables in memory;
   * the spill file is `path` (created at the first spill, deleted by the caller).
   */
  constructor(
    private readonly path: string,
    private readonly threshold: number | undefined,
    private readonly memoryBytes = DEFAULT_DEDUP_MEMORY_BYTES,
  ) {
    // The tables are sized once from the budget (three quarters; the Bloom filter of a spill
    // takes the last quarter) and never grow: memory is the same at 64 MiB of input as at
    // 1 TiB. Their pages become resident as rows fill them, so a small job stays small.
    const rows = Math.max(64, Math.floor((memoryBytes * 0.75) / (threshold === undefined ? EXACT_ROW_BYTES : EXACT_ROW_BYTES + NEAR_ROW_BYTES)));
    this.exact = new ExactTable(rows);
    this.lsh = new BucketTable(threshold === undefined ? 0 : rows * BANDS);
    this.sigs = new Uint32Array(threshold === undefined ? 0 : rows * HASHES);
  }

  /** 'exact', 'near', or undefined for a first occurrence (which is then remembered). */
  async check(key: string): Promise<'exact' | 'near' | undefined> {
    return this.checkFingerprint(fingerprint(key, this.threshold !== undefined));
  }

  /** check() for a key fingerprinted elsewhere (on a pipeline worker). */
  async checkFingerprint(fp: Fingerprint): Promise<'exact' | 'near' | undefined> {
    const answer = this.lookup(fp);
    if (this.exact.size === this.exact.capacity) await this.spill();
    return answer;
  }

  private lookup({ hash, signature, bands }: Fingerprint): 'exact' | 'near' | undefined {
    if (this.exact.has(hash)) return 'exact';
    if (this.bloom?.has(hashKeyA(hash), hashKeyB(hash)) && this.diskExact(hash)) return 'exact';
    this.exact.add(hash);
    if (this.threshold === undefined || !signature) return undefined;
    const keys = bands ?? bandKeys(signature);
    // Most rows share no bucket with any earlier row: nothing is allocated for them.
    const found = this.found;
    const seen = this.seen;
    seen.length = 0;
    for (let b = 0; b < BANDS; b++) {
      const k = keys[b]!;
      found.length = 0;
      this.lsh.recent(k, CANDIDATES, found);
      if (found.length < CANDIDATES && this.bloom?.has(bandKeyA(k), bandKeyB(k))) this.diskRecent(k, CANDIDATES - found.length, found);
      for (const row of found) {
        if (seen.includes(row)) continue;
        seen.push(row);
        if (similarity(signature, this.signatureOf(row)) >= this.threshold) return 'near';
      }
    }
    const row = this.nextRow++;
    for (let b = 0; b < BANDS; b++) this.lsh.add(keys[b]!, row);
    this.sigs.set(signature, this.sigRows * HASHES);
    this.sigRows++;
    return undefined;
  }

  private signatureOf(row: number): Uint32Array {
    if (row >= this.base) return this.sigs.subarray((row - this.base) * HASHES, (row - this.base + 1) * HASHES);
    this.diskLookups++;
    const { sig } = this.db!.prepare<{ sig: Uint8Array }>('SELECT sig FROM sig WHERE row = ?').get(row)!;
    return new Uint32Array(Uint8Array.from(sig).buffer);
  }

  private diskExact(hash: Uint8Array): boolean {
    this.diskLookups++;
    return this.db!.prepare('SELECT 1 FROM exact WHERE hash = ?').get(hash) !== undefined;
  }

  private diskRecent(key: number, limit: number, into: number[]): void {
    this.diskLookups++;
    for (const { row } of this.db!.prepare<{ row: number }>('SELECT row FROM lsh WHERE key = ? ORDER BY row DESC LIMIT ?').all(key, limit)) into.push(row);
  }

  /**
   * Everything in memory goes to disk in one transaction (lsh entries oldest first, so rowid
   * order stays recency order), its keys into the Bloom filter, and memory starts empty.
   * The spill file has no journal: a crash discards the job's scratch state anyway.
   */
  private async spill(): Promise<void> {
    if (!this.db) {
      this.db = await openDatabase(this.path);
      // openDatabase turns WAL on; this file needs no journal at all, and WAL kept a second copy of every page.
      this.db.exec('PRAGMA journal_mode = DELETE');
      this.db.exec(`PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16384;
        CREATE TABLE exact (hash BLOB PRIMARY KEY) WITHOUT ROWID;
        CREATE TABLE lsh (key INTEGER NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (key, row)) WITHOUT ROWID;
        CREATE TABLE sig (row INTEGER PRIMARY KEY, sig BLOB NOT NULL);`);
      this.bloom = new Bloom(Math.max(1024, Math.floor(this.memoryBytes / 4)));
    }
    const db = this.db;
    const bloom = this.bloom!;
    // A spill is about a million inserts: done in slices, so the daemon answers in between
    // (the job itself waits for the spill; nothing else touches these tables).
    let slice = performance.now();
    const breathe = async () => {
      if (performance.now() - slice < 20) return;
      await yieldToLoop();
      slice = performance.now();
    };
    db.exec('BEGIN');
    try {
      // Many rows per statement: a statement's run costs more than SQLite's insert itself.
      const exact = batchInsert(db, 'INSERT OR IGNORE INTO exact (hash) VALUES', '(?)');
      // In about the b-tree's order too (memcmp order of the first four bytes).
      const prefix = (i: number) => {
        const h = this.exact.at(i);
        return ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
      };
      const hashes = Array.from({ length: this.exact.size }, (_, i) => [prefix(i), i] as const).sort((a, b) => a[0] - b[0]);
      for (let i = 0; i < hashes.length; i++) {
        const h = this.exact.at(hashes[i]![1]);
        exact.add(h);
        bloom.add(hashKeyA(h), hashKeyB(h));
        if ((i & 1023) === 0) await breathe();
      }
      exact.flush();
      const lsh = batchInsert(db, 'INSERT INTO lsh (key, row) VALUES', '(?, ?)');
      // In key order (stable, so a key's rows stay in row order): appends to the b-tree's
      // pages one after another instead of touching a random page per entry.
      const order = Array.from({ length: this.lsh.size }, (_, i) => i).sort((a, b) => this.lsh.keyAt(a) - this.lsh.keyAt(b));
      for (let i = 0; i < order.length; i++) {
        const key = this.lsh.keyAt(order[i]!);
        lsh.add(key, this.lsh.rowAt(order[i]!));
        bloom.add(bandKeyA(key), bandKeyB(key));
        if ((i & 1023) === 0) await breathe();
      }
      lsh.flush();
      const sig = batchInsert(db, 'INSERT INTO sig (row, sig) VALUES', '(?, ?)');
      for (let i = 0; i < this.sigRows; i++) {
        sig.add(this.base + i, new Uint8Array(this.sigs.buffer, i * HASHES * 4, HASHES * 4));
        if ((i & 1023) === 0) await breathe();
      }
      sig.flush();
      db.exec('COMMIT');
    } catch (err) {
      // SQLite has already rolled back on SQLITE_FULL; a ROLLBACK then throws "no transaction is
      // active" and hid the real cause (review). The disk's answer is what the job reports.
      try {
        db.exec('ROLLBACK');
      } catch {
        // nothing was open
      }
      if (isOutOfSpace(err)) throw new InsufficientStorage(`the dataset job's scratch disk (${this.path})`);
      throw err;
    }
    this.exact.clear();
    this.lsh.clear();
    this.base = this.nextRow;
    this.sigRows = 0;
    this.spills++;
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
  }
}

/** Inserts of one shape, sent 128 rows per statement. */
function batchInsert(db: SqlDatabase, head: string, tuple: string) {
  const ROWS = 128;
  const full = db.prepare(`${head} ${Array(ROWS).fill(tuple).join(', ')}`);
  let params: SqlValue[] = [];
  let n = 0;
  return {
    add(...values: SqlValue[]) {
      for (const v of values) params.push(v);
      if (++n === ROWS) {
        full.run(...params);
        params = [];
        n = 0;
      }
    },
    flush() {
      if (n > 0) db.prepare(`${head} ${Array(n).fill(tuple).join(', ')}`).run(...params);
      params = [];
      n = 0;
    },
  };
}

/** Pure, so it runs on a pipeline worker; the finder's tables stay on the job's thread. */
export function fingerprint(key: string, near: boolean): Fingerprint {
  const hash = sha1(key);
  if (!near) return { hash };
  const signature = minhash(key);
  return { hash, signature, bands: bandKeys(signature) };
}

/** Word and shingle hashes of the row being hashed (one row at a time per thread), grown as needed. */
let scratch: Int32Array = new Int32Array(4096);

export function minhash(text: string): Uint32Array {
  // Words split where 0.12's split(/\s+/u) split them. Word hashes in one pass over the
  // characters, then each 3-gram's hash from its three word hashes, in place: no strings and
  // no arrays per row.
  let w: Int32Array = scratch;
  let n = 0;
  let h = 0x811c9dc5;
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (isSpace(c)) {
      if (inWord) {
        if (n === w.length) w = grown(w);
        w[n++] = fmix32(h);
      }
      inWord = false;
      h = 0x811c9dc5;
    } else {
      h = Math.imul(h ^ c, 0x01000193);
      inWord = true;
    }
  }
  if (inWord) {
    if (n === w.length) w = grown(w);
    w[n++] = fmix32(h);
  }
  // A huge row's buffer is not kept for the rows after it.
  scratch = w.length <= 1 << 16 ? w : scratch;
  let shingles: number;
  if (n < 3) {
    let a = 0x811c9dc5;
    for (let i = 0; i < n; i++) a = Math.imul(a ^ w[i]!, 0x01000193);
    w[0] = fmix32(a);
    shingles = 1;
  } else {
    // Shingle i overwrites word i, which no later shingle reads.
    for (let i = 0; i + 3 <= n; i++) w[i] = fmix32(Math.imul(Math.imul(w[i]!, 0x01000193) ^ w[i + 1]!, 0x01000193) ^ w[i + 2]!);
    shingles = n - 2;
  }
  return minima(w, shingles);
}

/** The 64 minima over the shingle hashes w[0 .. shingles). */
function minima(w: Int32Array, shingles: number): Uint32Array {
  // Four functions per pass over the shingles, their minima in registers: twice as fast again.
  const sig = new Uint32Array(HASHES);
  for (let f = 0; f < HASHES; f += 4) {
    const s0 = SEEDS_I32[f]!, s1 = SEEDS_I32[f + 1]!, s2 = SEEDS_I32[f + 2]!, s3 = SEEDS_I32[f + 3]!;
    const m0 = MULTIPLIERS_I32[f]!, m1 = MULTIPLIERS_I32[f + 1]!, m2 = MULTIPLIERS_I32[f + 2]!, m3 = MULTIPLIERS_I32[f + 3]!;
    let n0 = 0xffffffff, n1 = n0, n2 = n0, n3 = n0;
    for (let i = 0; i < shingles; i++) {
      const x = w[i]!;
      let v = Math.imul(x ^ s0, m0);
      v = (v ^ (v >>> 15)) >>> 0;
      if (v < n0) n0 = v;
      v = Math.imul(x ^ s1, m1);
      v = (v ^ (v >>> 15)) >>> 0;
      if (v < n1) n1 = v;
      v = Math.imul(x ^ s2, m2);
      v = (v ^ (v >>> 15)) >>> 0;
      if (v < n2) n2 = v;
      v = Math.imul(x ^ s3, m3);
      v = (v ^ (v >>> 15)) >>> 0;
      if (v < n3) n3 = v;
    }
    sig[f] = n0;
    sig[f + 1] = n1;
    sig[f + 2] = n2;
    sig[f + 3] = n3;
  }
  return sig;
}

// crypto.hash (Node 20.12+) skips the Hash object: a third of createHash's cost per short row.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'buffer') => Buffer }).hash;
const sha1 = (key: string): Uint8Array => (oneShot ? oneShot('sha1', key, 'buffer') : createHash('sha1').update(key).digest());

function grown(w: Int32Array): Int32Array {
  const g = new Int32Array(w.length * 2);
  g.set(w);
  return g;
}

export function similarity(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let i = 0; i < HASHES; i++) if (a[i] === b[i]) same++;
  return same / HASHES;
}

export function bandKeys(sig: Uint32Array): Float64Array {
  const keys = new Float64Array(BANDS);
  for (let b = 0; b < BANDS; b++) keys[b] = bandBucket(sig, b) * BANDS + b;
  return keys;
}

function bandBucket(sig: Uint32Array, band: number): number {
  let h1 = 0x811c9dc5;
  let h2 = 0x1b873593;
  for (let i = band * ROWS; i < (band + 1) * ROWS; i++) {
    h1 = fmix32(h1 ^ sig[i]!);
    h2 = fmix32(Math.imul(h2, 31) ^ sig[i]!);
  }
  // 50 bits, so that with the band number (3 bits) the key is an exact integer in SQLite and JavaScript.
  return (h1 >>> 0) * 2 ** 18 + (h2 >>> 14);
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// Two 32-bit hashes of a key for the tables and the Bloom filter. SHA-1 bytes are already
// uniform; band keys are 53-bit integers, mixed.
const word = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
const hashKeyA = (h: Uint8Array) => word(h, 4);
const hashKeyB = (h: Uint8Array) => word(h, 8) ^ 0x5bd1e995;
const bandKeyA = (k: number) => fmix32((k >>> 0) ^ 0x27d4eb2f);
const bandKeyB = (k: number) => fmix32(Math.floor(k / 2 ** 32) ^ fmix32(k >>> 0));

/** SHA-1s in an open-addressing table of fixed capacity: 20 bytes per entry and two slots (entry + 1; 0 is empty). */
class ExactTable {
  private readonly slots: Int32Array;
  private readonly entries: Uint8Array;
  private count = 0;

  constructor(readonly capacity: number) {
    this.slots = new Int32Array(nextPow2(capacity * 2));
    this.entries = new Uint8Array(HASH_BYTES * capacity);
  }

  get size(): number {
    return this.count;
  }

  has(hash: Uint8Array): boolean {
    const mask = this.slots.length - 1;
    for (let s = word(hash, 0) & mask; ; s = (s + 1) & mask) {
      const e = this.slots[s]! - 1;
      if (e < 0) return false;
      let same = true;
      for (let i = 0, at = e * HASH_BYTES; i < HASH_BYTES; i++) {
        if (this.entries[at + i] !== hash[i]) {
          same = false;
          break;
        }
      }
      if (same) return true;
    }
  }

  /** Callers check `size < capacity` first. */
  add(hash: Uint8Array): void {
    const e = this.count++;
    this.entries.set(hash.subarray(0, HASH_BYTES), e * HASH_BYTES);
    const mask = this.slots.length - 1;
    let s = word(hash, 0) & mask;
    while (this.slots[s] !== 0) s = (s + 1) & mask;
    this.slots[s] = e + 1;
  }

  at(i: number): Uint8Array {
    return this.entries.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
  }

  clear(): void {
    this.slots.fill(0);
    this.count = 0;
  }
}

/** LSH keys → the rows in their bucket, newest first (each entry links to the one before it of its key); fixed capacity. */
class BucketTable {
  /** Entry + 1 of each key's newest entry; 0 is empty. */
  private readonly slots: Int32Array;
  private readonly keys: Float64Array;
  private readonly rows: Int32Array;
  private readonly prev: Int32Array;
  private count = 0;

  constructor(readonly capacity: number) {
    this.slots = new Int32Array(nextPow2(capacity * 2));
    this.keys = new Float64Array(capacity);
    this.rows = new Int32Array(capacity);
    this.prev = new Int32Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Appends up to `limit` rows of `key`, most recent first. */
  recent(key: number, limit: number, into: number[]): void {
    for (let e = this.slots[this.slotOf(key)]! - 1; e >= 0 && into.length < limit; e = this.prev[e]!) into.push(this.rows[e]!);
  }

  /** Callers check `size < capacity` first. */
  add(key: number, row: number): void {
    const s = this.slotOf(key);
    const e = this.count++;
    this.keys[e] = key;
    this.rows[e] = row;
    this.prev[e] = this.slots[s]! - 1;
    this.slots[s] = e + 1;
  }

  keyAt(e: number): number {
    return this.keys[e]!;
  }

  rowAt(e: number): number {
    return this.rows[e]!;
  }

  clear(): void {
    this.slots.fill(0);
    this.count = 0;
  }

  /** The slot holding `key`'s newest entry, or the empty slot where it would go. */
  private slotOf(key: number): number {
    const mask = this.slots.length - 1;
    let s = bandKeyA(key) & mask;
    for (;;) {
      const e = this.slots[s]! - 1;
      if (e < 0 || this.keys[e] === key) return s;
      s = (s + 1) & mask;
    }
  }
}

function nextPow2(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(2, n)));
}

/** A Bloom filter over spilled keys, 7 probes by double hashing; a false positive costs one disk lookup, never a wrong answer. */
class Bloom {
  private readonly bits: Uint32Array;
  private readonly mask: number;

  constructor(bytes: number) {
    const words = 2 ** Math.floor(Math.log2(bytes / 4));
    this.bits = new Uint32Array(words);
    this.mask = words * 32 - 1;
  }

  bytes(): number {
    return this.bits.byteLength;
  }

  add(a: number, b: number): void {
    for (let i = 0; i < 7; i++) {
      const bit = (a + Math.imul(i, b)) & this.mask;
      this.bits[bit >>> 5] = this.bits[bit >>> 5]! | (1 << (bit & 31));
    }
  }

  has(a: number, b: number): boolean {
    for (let i = 0; i < 7; i++) {
      const bit = (a + Math.imul(i, b)) & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}
