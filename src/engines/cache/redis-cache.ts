import { readFileSync } from 'node:fs';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { CacheUnavailable, type Cache, type CacheState, type CounterSpec, type GetOptions, type IncrementResult } from './cache.js';

// The shared driver: Redis standalone, behind Sentinel, or a Cluster (ioredis). Commands fail
// fast while the connection is down (no offline queue, short command timeout), because the
// callers have a better answer than waiting: SQLite. ioredis keeps reconnecting in the
// background, and the state flips back to `ok` on its own — no restart needed.

const INCREMENT_BOUNDED = readFileSync(new URL('./commands/increment-bounded.lua', import.meta.url), 'utf8');

export type RedisTopology =
  | { mode: 'standalone'; url: string }
  | { mode: 'sentinel'; sentinels: Array<{ host: string; port: number }>; name: string }
  | { mode: 'cluster'; nodes: Array<{ host: string; port: number }> };

export interface RedisCacheOptions {
  topology: RedisTopology;
  username?: string | undefined;
  password?: string | undefined;
  tls?: boolean | undefined;
  /** Prepended to every key, so several applications can share one Redis. */
  keyPrefix: string;
  commandTimeoutMs: number;
}

type Client = Redis | Cluster;
type WithScript = { incrementBounded(numKeys: number, ...args: Array<string | number>): Promise<number[]> };

export class RedisCache implements Cache {
  readonly driver = 'redis' as const;
  private current: CacheState = 'degraded';
  private readonly listeners: Array<(s: CacheState) => void> = [];
  private readonly client: Client;

  constructor(private readonly options: RedisCacheOptions) {
    const common: RedisOptions = {
      username: options.username,
      password: options.password,
      ...(options.tls ? { tls: {} } : {}),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.commandTimeoutMs,
      connectTimeout: 2000,
      // Keep trying for ever, at most every 2 s: healing must not need a restart.
      retryStrategy: (times) => Math.min(times * 100, 2000),
      lazyConnect: false,
    };
    const t = options.topology;
    if (t.mode === 'cluster') {
      this.client = new Cluster(t.nodes, { redisOptions: common, enableOfflineQueue: false, clusterRetryStrategy: (n) => Math.min(n * 100, 2000) });
    } else if (t.mode === 'sentinel') {
      this.client = new Redis({ ...common, sentinels: t.sentinels, name: t.name, sentinelPassword: options.password });
    } else {
      this.client = new Redis(t.url, common);
    }
    this.client.defineCommand('incrementBounded', { lua: INCREMENT_BOUNDED });
    this.client.on('ready', () => this.setState('ok'));
    for (const event of ['close', 'end', 'reconnecting'] as const) this.client.on(event, () => this.setState('degraded'));
    // Without a listener ioredis prints every connection error; the state already says it.
    this.client.on('error', () => undefined);
  }

  /** Resolves once connected, or after timeoutMs with the cache still degraded. */
  async waitReady(timeoutMs: number): Promise<CacheState> {
    if (this.current === 'ok') return 'ok';
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.listeners.push((s) => {
        if (s === 'ok') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return this.current;
  }

  private key(k: string): string {
    return this.options.keyPrefix + k;
  }

  async get(key: string, options: GetOptions = {}): Promise<Buffer | undefined> {
    const k = this.key(key);
    const value = await this.run(() =>
      options.slideTtlSeconds ? this.client.getexBuffer(k, 'EX', options.slideTtlSeconds) : this.client.getBuffer(k),
    );
    return value ?? undefined;
  }

  async getMany(keys: readonly string[]): Promise<Array<Buffer | undefined>> {
    if (keys.length === 0) return [];
    if (this.client instanceof Cluster) {
      // A Cluster refuses MGET (and ioredis a pipeline) across slots: one GET per key, sent
      // together, each routed to the node that owns its slot.
      const values = await this.run(() => Promise.all(keys.map((k) => this.client.getBuffer(this.key(k)))));
      return values.map((v) => v ?? undefined);
    }
    const values = await this.run(() => this.client.mgetBuffer(...keys.map((k) => this.key(k))));
    return values.map((v) => v ?? undefined);
  }

  async set(key: string, value: Buffer, ttlSeconds = 0): Promise<void> {
    const k = this.key(key);
    await this.run(() => (ttlSeconds > 0 ? this.client.set(k, value, 'EX', ttlSeconds) : this.client.set(k, value)));
  }

  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    if (this.client instanceof Cluster) {
      await this.run(() => Promise.all(keys.map((k) => this.client.del(this.key(k)))));
      return;
    }
    await this.run(() => this.client.del(...keys.map((k) => this.key(k))));
  }

  async increment(counters: readonly CounterSpec[], by: number): Promise<IncrementResult> {
    const args: Array<string | number> = counters.map((c) => this.key(c.key));
    args.push(by);
    // The script needs every initial value up front (it runs in one round trip).
    for (const c of counters) args.push(c.max, Math.max(1, Math.ceil(c.ttlSeconds)), c.initial());
    const reply = await this.run(() => (this.client as unknown as WithScript).incrementBounded(counters.length, ...args));
    return { applied: Number(reply[0]) === 1, values: reply.slice(1).map(Number) };
  }

  state(): CacheState {
    return this.current;
  }

  onStateChange(listener: (state: CacheState) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  private setState(next: CacheState): void {
    if (next === this.current) return;
    this.current = next;
    for (const l of [...this.listeners]) l(next);
  }

  private async run<T>(command: () => Promise<T>): Promise<T> {
    if (this.current !== 'ok') throw new CacheUnavailable('redis is not connected');
    try {
      return await command();
    } catch (err) {
      throw new CacheUnavailable(`redis command failed: ${(err as Error).message}`, { cause: err });
    }
  }
}
