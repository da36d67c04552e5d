import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isOutOfSpace, NotFound, Unavailable } from '../errors.js';
import { Sealer } from '../crypto/sealed-stream.js';
import { rangedFetch, type RangedFetchOptions } from './ranged-fetch.js';

// Model files on local NVMe, keyed by sha256, so a GPU server loads weights at disk speed.
// The cache is derived state: any file here can be deleted and is fetched again from the
// object tier. Invariants: a file named <sha256> is complete and verified (it is filled under
// .tmp/, hashed, checked and renamed into place); the index is rebuilt from the directory at
// start (mtime = last use), so it survives restarts; entries pinned by alias are never evicted.
// With encryption on, files are sealed like objects (a hit decrypts the packages a range
// touches) and sizes count the bytes on disk.
//
// A miss starts one fill per sha256, which copies from the object tier into .tmp/ at the
// tier's speed, whoever is reading. Every reader of a file being filled — the one that caused
// it, later ones, ranged ones — reads the growing temp file at its own pace, so a client that
// stops reading holds up nobody (in 0.7.0 the fill ran at the pace of its first reader, and
// every other reader of the file waited behind it). Two rules keep that safe:
// - The file's last byte is served only after the fill has verified the sha256, so a whole-file
//   reader of corrupt bytes sees a broken transfer, never a complete wrong file; and a sha256
//   whose fill found corrupt bytes is refused for a while instead of being fetched again.
// - The cache never costs a read: when a fill fails for any other reason (a full disk above
//   all), its readers carry on from the object tier at the offset they reached, and after a
//   full disk no fill is tried for a while.

export interface CacheStats {
  capacity_bytes: number;
  used_bytes: number;
  hits: number;
  misses: number;
  evictions: number;
  entries: number;
}

export interface CacheEvents {
  hit?: () => void;
  miss?: () => void;
  evict?: (bytes: number) => void;
  fill?: (bytes: number) => void;
  /** A fill failed; readers went on from the object tier (or, when corrupt, were refused). */
  fillFailed?: (sha256: string, err: Error) => void;
}

/** Reads an inclusive range of the object from the object tier (the whole object without one). */
export type FetchObject = (range?: { start: number; end: number }) => Promise<Readable>;

interface Entry {
  size: number;
}

/** After a fill hit a full disk, reads go straight to the object tier for this long. */
const PAUSE_AFTER_FULL_DISK_MS = 10_000;
/** A sha256 whose bytes came back corrupt is refused for this long before it is fetched again. */
const CORRUPT_RETRY_MS = 5 * 60_000;
const READ_CHUNK = 256 * 1024;
/** Bytes per read when a complete cached file is served. */
const HIT_READ_BYTES = 1024 * 1024;

class CorruptObject extends Unavailable {}
class FillNotStarted extends Error {}

/** One copy from the object tier into .tmp/, shared by every reader of the sha256. */
class Fill {
  /** Bytes of the cache file (sealed, with encryption on) written so far. */
  written = 0;
  done = false;
  error: Error | undefined;
  /** Open readers; the handle closes when the fill has ended and the last one is gone. */
  private readers = 0;
  private waiters: Array<() => void> = [];
  /** Resolves once the source is open: a missing object fails here, before any byte is served. */
  started!: Promise<void>;
  finished!: Promise<void>;

  constructor(
    readonly tmp: string,
    readonly fh: FileHandle,
    /** Size the cache file will have; its last byte waits for verification. */
    readonly total: number,
  ) {}

  progressed(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }

  nextProgress(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  acquire(): void {
    this.readers++;
  }

  release(): void {
    if (--this.readers === 0 && (this.done || this.error)) void this.fh.close().catch(() => undefined);
  }

  ended(): void {
    if (this.readers === 0) void this.fh.close().catch(() => undefined);
    this.progressed();
  }

  /** Bytes [start, end] of the cache file as they are written. */
  async *tail(start: number, end: number): AsyncIterable<Buffer> {
    for (let pos = start; pos <= end; ) {
      const available = this.done ? this.written : Math.min(this.written, this.total - 1);
      if (pos < available) {
        const want = Math.min(READ_CHUNK, available - pos, end - pos + 1);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await this.fh.read(buf, 0, want, pos);
        if (bytesRead === 0) throw new Unavailable('the model cache file ended early');
        pos += bytesRead;
        yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
      } else if (this.error) throw this.error;
      else if (this.done) throw new Unavailable('the model cache file ended early');
      else await this.nextProgress();
    }
  }
}

export class ModelCache {
  /** Map order is LRU order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly filling = new Map<string, Fill>();
  private readonly corrupt = new Map<string, { until: number; error: Error }>();
  private fillsPausedUntil = 0;
  /** Set by the owner when the object tier is remote (S3, MinIO); undefined: one GET per fill. */
  ranged: RangedFetchOptions | undefined;
  private used = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  private constructor(
    private readonly dir: string,
    private readonly capacity: number,
    private readonly pinned: () => ReadonlySet<string>,
    private readonly events: CacheEvents,
    private readonly sealer: Sealer | undefined,
  ) {}

  static async open(dir: string, capacity: number, pinned: () => ReadonlySet<string>, events: CacheEvents = {}, sealer?: Sealer): Promise<ModelCache> {
    // Fills a crash interrupted are worthless: start with an empty .tmp.
    await rm(join(dir, '.tmp'), { recursive: true, force: true });
    await mkdir(join(dir, '.tmp'), { recursive: true });
    const cache = new ModelCache(dir, capacity, pinned, events, sealer);
    const found: Array<{ sha: string; size: number; mtime: number }> = [];
    for (const name of await readdir(dir)) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      const s = await stat(join(dir, name));
      found.push({ sha: name, size: s.size, mtime: s.mtimeMs });
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      cache.entries.set(f.sha, { size: f.size });
      cache.used += f.size;
    }
    // No eviction here: the pinned set may not be answerable yet. The owner calls trim() once
    // it is (a capacity lowered in config takes effect then).
    return cache;
  }

  has(sha256: string): boolean {
    return this.entries.has(sha256);
  }

  stats(): CacheStats {
    return { capacity_bytes: this.capacity, used_bytes: this.used, hits: this.hits, misses: this.misses, evictions: this.evictions, entries: this.entries.size };
  }

  /**
   * The file's bytes (or the inclusive `range` of them). A hit reads the cache file; a miss
   * joins or starts the fill (see the top of this file). Resolves once the bytes can flow, so a
   * missing object is an error here, before the caller has answered anything.
   */
  async read(sha256: string, size: number, fetch: FetchObject, range?: { start: number; end: number }): Promise<Readable> {
    if (this.entries.has(sha256)) {
      const hit = await this.openEntry(sha256, this.sealer ? Sealer.rawSize(size) : size);
      if (hit) {
        this.hits++;
        this.events.hit?.();
        this.touch(sha256);
        return this.fromFile(hit.fh, hit.size, range);
      }
    }
    this.misses++;
    this.events.miss?.();
    this.refuseIfCorrupt(sha256);
    if (size > this.capacity || Date.now() < this.fillsPausedUntil) return fetch(range);
    let fill: Fill;
    try {
      fill = await this.fill(sha256, size, fetch);
    } catch (err) {
      // No room for even the temp file: serve from the tier; any other failure is the tier's.
      if (!(err instanceof FillNotStarted)) throw err;
      return fetch(range);
    }
    return this.fromFill(fill, size, fetch, range);
  }

  /** Makes the file a cache hit without reading it (prefetch). */
  async ensure(sha256: string, size: number, fetch: FetchObject): Promise<void> {
    if (this.entries.has(sha256) || size > this.capacity) return;
    this.refuseIfCorrupt(sha256);
    const fill = await this.fill(sha256, size, fetch);
    fill.release();
    await fill.finished;
  }

  /** Evicts unpinned entries until the cache fits its capacity. */
  trim(): Promise<void> {
    return this.evict();
  }

  async remove(sha256: string): Promise<void> {
    const e = this.entries.get(sha256);
    if (!e) return;
    this.entries.delete(sha256);
    this.used -= e.size;
    await rm(join(this.dir, sha256), { force: true });
  }

  /**
   * The cache file, open; undefined (and the entry dropped) when it has vanished from disk or
   * is not the size it must be (truncated behind the daemon's back): a miss, filled afresh.
   */
  private async openEntry(sha256: string, expectedSize: number): Promise<{ fh: FileHandle; size: number } | undefined> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(join(this.dir, sha256), 'r');
      const size = (await fh.stat()).size;
      if (size === expectedSize) return { fh, size };
      await fh.close();
      this.events.fillFailed?.(sha256, new Error(`the cache file holds ${size} bytes, not ${expectedSize}; filled again`));
    } catch (err) {
      await fh?.close().catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const e = this.entries.get(sha256);
    if (e) {
      this.entries.delete(sha256);
      this.used -= e.size;
    }
    await rm(join(this.dir, sha256), { force: true });
    return undefined;
  }

  private refuseIfCorrupt(sha256: string): void {
    const bad = this.corrupt.get(sha256);
    if (bad && Date.now() < bad.until) throw bad.error;
    if (bad) this.corrupt.delete(sha256);
  }

  /** A reader of a complete cache file (the handle closes with the stream). */
  private async fromFile(fh: FileHandle, rawSize: number, range?: { start: number; end: number }): Promise<Readable> {
    // 1 MiB reads: with Node's default 64 KiB, a cache hit measured with curl ran at 0.64 of a
    // bare server reading 1 MiB at a time (issue 19) — the per-chunk cost is the loop's, not the disk's.
    if (!this.sealer) return fh.createReadStream(range ? { start: range.start, end: range.end, highWaterMark: HIT_READ_BYTES } : { highWaterMark: HIT_READ_BYTES });
    try {
      const plain = await this.sealer.open(async (start, end) => fh.createReadStream({ start, end, autoClose: false, highWaterMark: HIT_READ_BYTES }), rawSize, range);
      plain.once('close', () => void fh.close().catch(() => undefined));
      return plain;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** A reader of a file being filled, at its own pace, that falls back to the tier if the fill fails. */
  private fromFill(fill: Fill, size: number, fetch: FetchObject, range?: { start: number; end: number }): Readable {
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    const sealer = this.sealer;
    async function* serve(): AsyncIterable<Buffer> {
      let pos = start;
      try {
        const source = sealer ? await sealer.open(async (s, e) => fill.tail(s, e), fill.total, { start, end }) : fill.tail(start, end);
        for await (const chunk of source as AsyncIterable<Buffer>) {
          pos += chunk.length;
          yield chunk;
        }
        return;
      } catch (err) {
        if (err !== fill.error || err instanceof CorruptObject) throw err;
      }
      // The fill failed partway (a full disk, above all): the rest comes from the object tier.
      if (pos <= end) yield* (await fetch({ start: pos, end })) as AsyncIterable<Buffer>;
    }
    // The hold fill() took for this reader is given back when the stream closes: a stream
    // destroyed before it is read never runs its generator.
    const stream = Readable.from(serve(), { objectMode: false });
    stream.once('close', () => fill.release());
    return stream;
  }

  private async fill(sha256: string, size: number, fetch: FetchObject): Promise<Fill> {
    let fill = this.filling.get(sha256);
    if (!fill) {
      const tmp = join(this.dir, '.tmp', randomUUID());
      const total = this.sealer ? Sealer.rawSize(size) : size;
      let fh: FileHandle;
      try {
        fh = await open(tmp, 'wx+', 0o600);
      } catch (err) {
        if (isOutOfSpace(err)) this.fillsPausedUntil = Date.now() + PAUSE_AFTER_FULL_DISK_MS;
        this.events.fillFailed?.(sha256, err as Error);
        throw new FillNotStarted((err as Error).message);
      }
      // Another reader may have started the same fill while this one opened its file.
      const raced = this.filling.get(sha256);
      if (raced) {
        raced.acquire();
        await fh.close();
        await rm(tmp, { force: true });
        await raced.started.catch((err: unknown) => {
          raced.release();
          throw err;
        });
        return raced;
      }
      fill = new Fill(tmp, fh, total);
      this.filling.set(sha256, fill);
      // Large files from a remote tier: several ranged GETs at once (ranged-fetch.ts).
      const ranged = this.ranged && size >= 2 * this.ranged.partBytes;
      const source = ranged ? rangedFetch(fetch, size, this.ranged!) : fetch();
      const f = fill;
      fill.started = source.then(() => undefined);
      fill.finished = source.then(
        async (s) => {
          try {
            await this.copy(sha256, f, s);
          } finally {
            this.filling.delete(sha256);
          }
          f.ended();
        },
        (err: unknown) => {
          this.filling.delete(sha256);
          throw err;
        },
      );
      fill.finished = fill.finished.catch(async (err: Error) => {
        // All state first, then wake the readers: one that retries at once must see it.
        f.error = err;
        this.filling.delete(sha256);
        if (isOutOfSpace(err)) this.fillsPausedUntil = Date.now() + PAUSE_AFTER_FULL_DISK_MS;
        if (err instanceof CorruptObject) this.corrupt.set(sha256, { until: Date.now() + CORRUPT_RETRY_MS, error: err });
        f.ended();
        if (!(err instanceof NotFound)) this.events.fillFailed?.(sha256, err);
        await rm(f.tmp, { force: true });
        throw err;
      });
      // Readers learn of a failure through the fill's state; nobody else may be listening.
      fill.finished.catch(() => undefined);
    }
    // Held for the caller from the moment it joins, in the same tick as the lookup: a small
    // fill can end (and close its handle) before the caller's stream reads anything.
    const joined = fill;
    joined.acquire();
    await joined.started.catch((err: unknown) => {
      joined.release();
      throw err;
    });
    return joined;
  }

  private async copy(sha256: string, fill: Fill, source: Readable): Promise<void> {
    const hash = createHash('sha256');
    async function* hashed(): AsyncIterable<Buffer> {
      for await (const chunk of source) {
        hash.update(chunk as Buffer);
        yield chunk as Buffer;
      }
    }
    try {
      for await (const chunk of this.sealer ? this.sealer.seal(hashed()) : hashed()) {
        // Positional writes through the handle: errors reject here (no stray 'error' event).
        for (let done = 0; done < chunk.length; ) {
          const { bytesWritten } = await fill.fh.write(chunk, done, chunk.length - done, fill.written);
          done += bytesWritten;
          fill.written += bytesWritten;
        }
        fill.progressed();
      }
    } finally {
      source.destroy();
    }
    const got = hash.digest('hex');
    if (got !== sha256) throw new CorruptObject(`the object tier returned corrupt bytes for ${sha256} (got ${got}); not cached`);
    if (fill.written !== fill.total) throw new CorruptObject(`the object tier returned ${fill.written} bytes for ${sha256}, not ${fill.total}; not cached`);
    await rename(fill.tmp, join(this.dir, sha256));
    fill.done = true;
    fill.progressed();
    this.entries.set(sha256, { size: fill.written });
    this.used += fill.written;
    this.events.fill?.(fill.written);
    await this.evict(sha256);
  }

  private touch(sha256: string): void {
    const e = this.entries.get(sha256)!;
    this.entries.delete(sha256);
    this.entries.set(sha256, e);
    // mtime carries the LRU order across restarts; failure to set it only costs ordering.
    const now = new Date();
    void utimes(join(this.dir, sha256), now, now).catch(() => undefined);
  }

  /** Evicts least recently used, unpinned entries until the cache fits. */
  private async evict(keep?: string): Promise<void> {
    if (this.used <= this.capacity) return;
    const pinned = this.pinned();
    for (const [sha, e] of this.entries) {
      if (this.used <= this.capacity) break;
      if (sha === keep || pinned.has(sha) || this.filling.has(sha)) continue;
      this.entries.delete(sha);
      this.used -= e.size;
      this.evictions++;
      this.events.evict?.(e.size);
      await rm(join(this.dir, sha), { force: true });
    }
  }
}
