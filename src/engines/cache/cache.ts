// The cache tier. It is never the truth: every value in it can be rebuilt from SQLite and the
// object tier, so an entry may vanish at any moment (eviction, TTL, a Redis restart) and
// callers must treat a miss as normal. Two drivers implement this interface — `memory`
// (in-process, the embedded default) and `redis` (shared between nodes) — and both pass
// test/engines/cache/cache.contract.ts.

export type CacheState = 'ok' | 'degraded';

/** One counter of an atomic multi-counter increment (quota: today's and this month's tokens). */
export interface CounterSpec {
  key: string;
  /** The increment is refused (and no counter changes) if this counter would pass max. */
  max: number;
  /** Expiry set when the counter is created; a period counter lives until its period ends. */
  ttlSeconds: number;
  /**
   * The value a missing counter starts from (the truth from SQLite, after a cache loss). A
   * function: it is a SQL sum, needed only when the counter is missing, which it rarely is.
   */
  initial: () => number;
}

export interface IncrementResult {
  applied: boolean;
  /** Each counter's value after the call (unchanged values when refused). */
  values: number[];
}

export interface GetOptions {
  /** Sliding expiry: a hit pushes the entry's expiry to now + this. */
  slideTtlSeconds?: number;
}

/**
 * A value kept as the object it encodes, with its bytes made only when something asks for them.
 * Only an in-process driver can hold one; `size` stands in for the byte length in its budget.
 */
export interface Deferred {
  readonly size: number;
  readonly decoded: unknown;
  encode(): Buffer;
}

export interface Cache {
  readonly driver: 'memory' | 'redis';
  /**
   * In-process drivers only: store a value without encoding it, and read the stored form back
   * (the object for a deferred value). A conversation tail was MessagePack-encoded on every
   * append (a tenth of an append's CPU) for a cache in the same process.
   */
  setDeferred?(key: string, value: Deferred, ttlSeconds?: number): Promise<void>;
  getStored?(key: string, options?: GetOptions): Promise<Buffer | Deferred | undefined>;
  get(key: string, options?: GetOptions): Promise<Buffer | undefined>;
  getMany(keys: readonly string[]): Promise<Array<Buffer | undefined>>;
  /** ttlSeconds 0 or absent: no expiry (the memory driver may still evict under its byte budget). */
  set(key: string, value: Buffer, ttlSeconds?: number): Promise<void>;
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Adds `by` to every counter, all or none: refused when any counter would exceed its max.
   * Atomic across callers sharing the cache (one Lua script on Redis), so several nodes that
   * share one Redis enforce one limit.
   */
  increment(counters: readonly CounterSpec[], by: number): Promise<IncrementResult>;
  /** `degraded` while the backing server is unreachable; commands then fail fast. */
  state(): CacheState;
  /** Called on every change of state (for metrics, /readyz and dropping stale entries). */
  onStateChange(listener: (state: CacheState) => void): void;
  close(): Promise<void>;
}

/** Thrown by a driver when its server cannot be reached; callers fall back to SQLite. */
export class CacheUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CacheUnavailable';
  }
}
