import { LRUCache } from 'lru-cache';
import type { Cache, CacheState, CounterSpec, Deferred, GetOptions, IncrementResult } from './cache.js';

// The embedded default: an LRU bounded by bytes, in this process. Counters live in their own
// map, outside the LRU, so a burst of cached messages can never evict a quota counter and let
// a user past their limit; they are dropped when their period's TTL ends.

export class MemoryCache implements Cache {
  readonly driver = 'memory' as const;
  private readonly entries: LRUCache<string, Buffer | Deferred>;
  private readonly counters = new Map<string, { value: number; expires: number }>();

  constructor(maxBytes: number) {
    this.entries = new LRUCache<string, Buffer | Deferred>({
      maxSize: maxBytes,
      // Keys count too: a million tiny entries must not slip past the budget.
      sizeCalculation: (value, key) => Math.max(1, (Buffer.isBuffer(value) ? value.length : value.size) + key.length),
      ttlAutopurge: false,
    });
  }

  async get(key: string, options: GetOptions = {}): Promise<Buffer | undefined> {
    return bytesOf(await this.getStored(key, options));
  }

  async getStored(key: string, options: GetOptions = {}): Promise<Buffer | Deferred | undefined> {
    const value = this.entries.get(key);
    if (value && options.slideTtlSeconds) this.entries.set(key, value, { ttl: options.slideTtlSeconds * 1000 });
    return value;
  }

  async getMany(keys: readonly string[]): Promise<Array<Buffer | undefined>> {
    return keys.map((k) => bytesOf(this.entries.get(k)));
  }

  async setDeferred(key: string, value: Deferred, ttlSeconds = 0): Promise<void> {
    return this.set(key, value, ttlSeconds);
  }

  async set(key: string, value: Buffer | Deferred, ttlSeconds = 0): Promise<void> {
    // An entry larger than the whole budget is simply not cached (lru-cache would throw).
    if ((Buffer.isBuffer(value) ? value.length : value.size) + key.length > this.entries.maxSize) {
      this.entries.delete(key);
      return;
    }
    this.entries.set(key, value, { ttl: ttlSeconds > 0 ? ttlSeconds * 1000 : 0 });
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const k of keys) this.entries.delete(k);
  }

  async increment(counters: readonly CounterSpec[], by: number): Promise<IncrementResult> {
    // No await between reading and writing: this whole method is one turn of the event loop,
    // which is what makes it atomic within the process.
    const now = Date.now();
    const current = counters.map((c) => {
      const held = this.counters.get(c.key);
      return held && held.expires > now ? held.value : c.initial();
    });
    if (counters.some((c, i) => current[i]! + by > c.max)) return { applied: false, values: current };
    const values = counters.map((c, i) => {
      const held = this.counters.get(c.key);
      const expires = held && held.expires > now ? held.expires : now + c.ttlSeconds * 1000;
      const value = current[i]! + by;
      this.counters.set(c.key, { value, expires });
      return value;
    });
    if (this.counters.size > 100_000) this.dropExpiredCounters(now);
    return { applied: true, values };
  }

  state(): CacheState {
    return 'ok';
  }

  onStateChange(): void {
    // An in-process cache is never unreachable.
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.counters.clear();
  }

  /** Bytes held by entries (not counters). */
  get bytes(): number {
    return this.entries.calculatedSize;
  }

  private dropExpiredCounters(now: number): void {
    for (const [k, c] of this.counters) if (c.expires <= now) this.counters.delete(k);
  }
}

function bytesOf(value: Buffer | Deferred | undefined): Buffer | undefined {
  return value === undefined || Buffer.isBuffer(value) ? value : value.encode();
}
