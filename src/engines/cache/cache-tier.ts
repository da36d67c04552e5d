import { randomBytes } from 'node:crypto';
import type { Cache, CacheState, CounterSpec, Deferred, GetOptions, IncrementResult } from './cache.js';

// The cache as engines use it. A failing cache is a slow miss, never an error: get() answers
// undefined, set() and delete() give up quietly, and the caller reads SQLite instead.
//
// Why the generation: an invalidation (delete after a write) that fails while Redis is
// unreachable would leave a stale entry behind once Redis comes back — a network partition
// keeps Redis's data. So every data key carries a generation chosen at start, and a new one is
// chosen whenever the cache heals or a write to it fails. Entries from before are never read
// again and expire on their TTL. Quota counters are not generational: they are shared with
// other nodes, and their truth is re-seeded from SQLite whenever they go missing.

export interface CacheTierEvents {
  hit?(use: string): void;
  miss?(use: string): void;
  state?(state: CacheState): void;
}

export class CacheTier {
  private generation = newGeneration();

  constructor(
    readonly cache: Cache,
    /** Separates this node's entries from other nodes' in a shared Redis. */
    private readonly namespace: string,
    private readonly events: CacheTierEvents = {},
  ) {
    cache.onStateChange((s) => {
      if (s === 'ok') this.generation = newGeneration();
      events.state?.(s);
    });
  }

  state(): CacheState {
    return this.cache.state();
  }

  private key(key: string): string {
    return `${this.namespace}:${this.generation}:${key}`;
  }

  async get(use: string, key: string, options?: GetOptions): Promise<Buffer | undefined> {
    let value: Buffer | undefined;
    try {
      value = await this.cache.get(this.key(key), options);
    } catch {
      value = undefined;
    }
    if (value) this.events.hit?.(use);
    else this.events.miss?.(use);
    return value;
  }

  /**
   * get() and a decode, remembered per stored value: the memory driver hands back the same
   * Buffer each time, so a hot entry is decoded once, not on every read (MessagePack decoding
   * of a conversation's tail was a twentieth of a hot read). With Redis every read is a new
   * Buffer and is decoded. The decoded value is shared: callers must not change it.
   */
  async getDecoded<T>(use: string, key: string, decode: (value: Buffer) => T, options?: GetOptions): Promise<T | undefined> {
    let stored: Buffer | Deferred | undefined;
    try {
      stored = this.cache.getStored ? await this.cache.getStored(this.key(key), options) : await this.cache.get(this.key(key), options);
    } catch {
      stored = undefined;
    }
    if (stored) this.events.hit?.(use);
    else this.events.miss?.(use);
    if (!stored) return undefined;
    if (!Buffer.isBuffer(stored)) return stored.decoded as T;
    let decoded = this.decoded.get(stored) as T | undefined;
    if (decoded === undefined) {
      decoded = decode(stored);
      this.decoded.set(stored, decoded);
    }
    return decoded;
  }

  /**
   * set() of a value whose decoded form is at hand: an in-process driver keeps the object and
   * never encodes it (unless something asks for bytes); Redis gets the encoding now. `size`
   * approximates the encoded length, for the memory driver's byte budget.
   */
  async setDecoded(key: string, decoded: unknown, encode: () => Buffer, size: number, ttlSeconds?: number): Promise<void> {
    if (this.cache.setDeferred) {
      try {
        await this.cache.setDeferred(`${this.namespace}:${this.generation}:${key}`, { size, decoded, encode }, ttlSeconds);
      } catch {
        this.invalidateAll();
      }
      return;
    }
    const value = encode();
    this.decoded.set(value, decoded);
    return this.set(key, value, ttlSeconds);
  }

  private readonly decoded = new WeakMap<Buffer, unknown>();

  async set(key: string, value: Buffer, ttlSeconds?: number): Promise<void> {
    const generation = this.generation;
    try {
      await this.cache.set(`${this.namespace}:${generation}:${key}`, value, ttlSeconds);
    } catch {
      this.invalidateAll();
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    try {
      await this.cache.delete(keys.map((k) => this.key(k)));
    } catch {
      this.invalidateAll();
    }
  }

  /** Counters are shared and not generational; failures reach the caller, which falls back. */
  increment(counters: readonly CounterSpec[], by: number): Promise<IncrementResult> {
    return this.cache.increment(counters, by);
  }

  /** Makes every entry written so far unreachable (they expire on their own). */
  invalidateAll(): void {
    this.generation = newGeneration();
  }

  close(): Promise<void> {
    return this.cache.close();
  }
}

function newGeneration(): string {
  return randomBytes(4).toString('hex');
}
