import { Worker } from 'node:worker_threads';
import type { IndexConfig, IndexStats, WorkerRequest } from './index-worker.js';
import { workerFile } from '../worker-file.js';

// The main thread's handle on one collection's index worker: each call is a message, answered
// in order. Nothing here blocks the event loop.

export type { IndexConfig, IndexStats };

export interface SearchResult {
  keys: BigUint64Array;
  distances: Float32Array;
}

/** Queries per batch: bounds one batch's time at the worker (and its message) under a flood. */
const MAX_SEARCH_BATCH = 256;

export class VectorIndex {
  private readonly worker: Worker;
  private next = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | undefined;

  constructor() {
    this.worker = new Worker(workerFile(import.meta.url, 'index-worker.js'));
    this.worker.on('message', ({ id, ok, result, error }: { id: number; ok: boolean; result?: unknown; error?: string }) => {
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      if (this.pending.size === 0) this.worker.unref();
      if (ok) p.resolve(result);
      else p.reject(new Error(error));
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`the index worker exited with ${code}`)));
    // An idle index must not keep a closing daemon alive, but one with work in flight must
    // (at start-up nothing else holds the event loop open while an index loads).
    this.worker.unref();
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private call<T>(msg: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, msg }, transfer);
    });
  }

  /** A fresh index, or the saved `file` that includes the log up to `lsn`. */
  init(config: IndexConfig, file?: { path: string; sha256: string; lsn: number; tombstones?: number | undefined }): Promise<{ size: number }> {
    return this.call({ op: 'init', config, file: file?.path, sha256: file?.sha256, lsn: file?.lsn, tombstones: file?.tombstones });
  }

  /** `vectors` is moved to the worker when it owns its whole buffer: the caller must not use it after. */
  add(keys: BigUint64Array, vectors: Float32Array, lsn: number): Promise<{ size: number }> {
    const whole = vectors.byteOffset === 0 && vectors.byteLength === vectors.buffer.byteLength;
    return this.call({ op: 'add', keys, vectors, lsn }, whole ? [vectors.buffer as ArrayBuffer] : []);
  }

  remove(keys: BigUint64Array, lsn: number): Promise<{ size: number }> {
    return this.call({ op: 'remove', keys, lsn });
  }

  private readonly waiting: Array<{ vector: Float32Array; k: number; resolve: (r: SearchResult) => void; reject: (e: Error) => void }> = [];
  private searching = false;

  /**
   * Queries go to the worker in batches: the first at once, and every one that arrives while a
   * batch is at the worker together in the next (usearch searches a batch natively, a thread
   * per core). One message per batch instead of per query, and no query waits behind others
   * one by one. Adds sent before a search still reach the worker before it (read-your-writes).
   */
  search(vector: Float32Array, k: number): Promise<SearchResult> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ vector, k, resolve, reject });
      if (!this.searching) this.sendSearches();
    });
  }

  private sendSearches(): void {
    const batch = this.waiting.splice(0, MAX_SEARCH_BATCH);
    if (batch.length === 0) return;
    this.searching = true;
    const dims = batch[0]!.vector.length;
    const vectors = new Float32Array(batch.length * dims);
    batch.forEach((q, i) => vectors.set(q.vector, i * dims));
    const k = Math.max(...batch.map((q) => q.k));
    this.call<{ keys: BigUint64Array; distances: Float32Array; counts: Uint32Array; k: number }>({ op: 'search', vectors, k }, [vectors.buffer as ArrayBuffer])
      .then(
        (r) =>
          batch.forEach((q, i) => {
            const n = Math.min(q.k, r.counts[i]!);
            q.resolve({ keys: r.keys.subarray(i * r.k, i * r.k + n), distances: r.distances.subarray(i * r.k, i * r.k + n) });
          }),
        (err: Error) => batch.forEach((q) => q.reject(err)),
      )
      .finally(() => {
        this.searching = false;
        this.sendSearches();
        if (!this.searching) for (const done of this.searchesDone.splice(0)) done();
      });
  }

  exact(keys: BigUint64Array, dataset: Float32Array, vector: Float32Array, k: number): Promise<SearchResult> {
    return this.call({ op: 'exact', keys, dataset, vector, k }, [dataset.buffer as ArrayBuffer]);
  }

  save(path: string): Promise<{ lsn: number; bytes: number; size: number }> {
    return this.call({ op: 'save', path });
  }

  stats(): Promise<IndexStats> {
    return this.call({ op: 'stats' });
  }

  /** Answers the searches it holds first: an index replaced by a compaction still has some queued. */
  async close(): Promise<void> {
    while (this.searching && !this.dead) await new Promise<void>((resolve) => this.searchesDone.push(resolve));
    this.dead ??= new Error('the index is closed');
    await this.worker.terminate();
  }

  private searchesDone: Array<() => void> = [];
}
