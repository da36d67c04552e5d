import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { Unavailable } from '../errors.js';
import { Sealer } from '../crypto/sealed-stream.js';

// Model files on local NVMe, keyed by sha256, so a GPU server loads weights at disk speed.
// The cache is derived state: any file here can be deleted and is fetched again from the
// object tier. Invariants: a file named <sha256> is complete and verified (it is filled under
// .tmp/, hashed, checked and renamed into place); the index is rebuilt from the directory at
// start (mtime = last use), so it survives restarts; entries pinned by alias are never evicted.
// With encryption on, files are sealed like objects (a hit decrypts the packages a range
// touches) and sizes count the bytes on disk.

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
}

interface Entry {
  size: number;
}

export class ModelCache {
  /** Map order is LRU order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly filling = new Map<string, Promise<void>>();
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
   * A stream of the file, from the cache. On a miss, one fill from `fetch` serves every
   * concurrent reader of the same sha256 (single flight). The reader that starts the fill of a
   * whole file gets the bytes as they arrive (a cold load is not a full download plus a
   * re-read); if the fill then finds a wrong sha256 its stream fails, so the client sees a
   * broken transfer rather than a complete wrong file. Readers that arrive during a fill, and
   * ranged ones, wait for it and read the file. A file larger than the whole cache is streamed
   * straight from `fetch` instead.
   */
  async read(sha256: string, size: number, fetch: () => Promise<Readable>, range?: { start: number; end: number }): Promise<Readable> {
    if (this.entries.has(sha256)) {
      this.hits++;
      this.events.hit?.();
      this.touch(sha256);
    } else {
      this.misses++;
      this.events.miss?.();
      if (size > this.capacity) return fetchRange(fetch, range);
      if (!range && !this.filling.has(sha256)) {
        const client = new PassThrough({ highWaterMark: 1024 * 1024 });
        const tap = async (chunk: Buffer) => {
          if (client.destroyed) return;
          if (!client.write(chunk)) await drainedOrClosed(client);
        };
        const fill = this.doFill(sha256, fetch, tap).finally(() => this.filling.delete(sha256));
        this.filling.set(sha256, fill);
        fill.then(
          () => client.end(),
          (err: unknown) => client.destroy(err as Error),
        );
        return client;
      }
      await this.fill(sha256, fetch);
    }
    const path = join(this.dir, sha256);
    if (this.sealer) return this.sealer.open(async (start, end) => createReadStream(path, { start, end }), this.entries.get(sha256)?.size ?? (await stat(path)).size, range);
    return createReadStream(path, range ?? {});
  }

  /** Makes the file a cache hit without reading it (prefetch). */
  async ensure(sha256: string, size: number, fetch: () => Promise<Readable>): Promise<void> {
    if (this.entries.has(sha256) || size > this.capacity) return;
    await this.fill(sha256, fetch);
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

  private fill(sha256: string, fetch: () => Promise<Readable>): Promise<void> {
    let p = this.filling.get(sha256);
    if (!p) {
      p = this.doFill(sha256, fetch).finally(() => this.filling.delete(sha256));
      this.filling.set(sha256, p);
    }
    return p;
  }

  private async doFill(sha256: string, fetch: () => Promise<Readable>, tap?: (chunk: Buffer) => Promise<void>): Promise<void> {
    const tmp = join(this.dir, '.tmp', randomUUID());
    const fh = await open(tmp, 'wx', 0o600);
    const hash = createHash('sha256');
    let size = 0;
    try {
      const out = fh.createWriteStream();
      const source = await fetch();
      async function* hashed(): AsyncIterable<Buffer> {
        for await (const chunk of source) {
          hash.update(chunk as Buffer);
          if (tap) await tap(chunk as Buffer);
          yield chunk as Buffer;
        }
      }
      for await (const chunk of this.sealer ? this.sealer.seal(hashed()) : hashed()) {
        size += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', r));
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
      const got = hash.digest('hex');
      if (got !== sha256) throw new Unavailable(`the object tier returned corrupt bytes for ${sha256} (got ${got}); not cached`);
      await rename(tmp, join(this.dir, sha256));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    this.entries.set(sha256, { size });
    this.used += size;
    this.events.fill?.(size);
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

/** Resolves when the stream can take more, or when it is gone (a client that hung up). */
function drainedOrClosed(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

async function fetchRange(fetch: () => Promise<Readable>, range?: { start: number; end: number }): Promise<Readable> {
  const stream = await fetch();
  if (!range) return stream;
  // Rare path (file larger than the whole cache): skip and cut on the stream.
  const { Readable } = await import('node:stream');
  return Readable.from(
    (async function* () {
      let pos = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        const from = Math.max(0, range.start - pos);
        const to = Math.min(chunk.length, range.end + 1 - pos);
        if (to > from) yield chunk.subarray(from, to);
        pos += chunk.length;
        if (pos > range.end) break;
      }
      stream.destroy();
    })(),
  );
}
