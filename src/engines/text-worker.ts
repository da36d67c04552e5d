import { Worker } from 'node:worker_threads';
import { StrataError, Unavailable, type ErrorCode } from './errors.js';
import type { TextJob } from './text-worker-thread.js';
import { workerFile } from './worker-file.js';

// Work proportional to a client's text (PII detection, tokenization) is linear, but linear in
// megabytes is still tens to thousands of milliseconds, and on the main thread that is time
// in which no other request is answered. Callers run short texts in place (a worker round
// trip costs more than a chat message) and send long ones here: one worker thread, started on
// first use, jobs answered in order. One is enough: it bounds what client text can take to
// one core, and its queue waits there, never on the event loop.

/** Texts longer than this (in UTF-16 code units) go to the worker. */
export const INLINE_MAX_CHARS = 16 * 1024;

export class TextWorker {
  private worker: Worker | undefined;
  private next = 0;
  private readonly pending = new Map<number, { worker: Worker; chars: number; resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private queuedChars = 0;
  /** Jobs sent to the worker so far. */
  jobs = 0;

  /**
   * `maxQueuedChars` bounds the text waiting for this worker: past it a job is refused with
   * 503 at once (retry later) instead of queueing behind minutes of work, and memory stays
   * bounded under a flood.
   */
  constructor(readonly name = 'text', private readonly maxQueuedChars = Infinity) {}

  run<T>(job: TextJob): Promise<T> {
    const chars = 'texts' in job ? job.texts.reduce((n, t) => n + t.length, 0) : 'bytes' in job ? job.bytes.length : job.text.length;
    if (this.queuedChars > 0 && this.queuedChars + chars > this.maxQueuedChars) {
      return Promise.reject(new Unavailable(`the ${this.name} worker has ${Math.round(this.queuedChars / 1048576)} Mi characters queued; retry in a moment`));
    }
    this.jobs++;
    this.queuedChars += chars;
    const worker = this.start();
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      worker.ref();
      this.pending.set(id, { worker, chars, resolve: resolve as (v: unknown) => void, reject });
      // A body that owns its whole buffer is moved, not copied (8 MB of upsert, on the event loop).
      const bytes = 'bytes' in job ? job.bytes : undefined;
      const movable = bytes && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.byteLength > 64 * 1024;
      worker.postMessage({ id, job }, movable ? [bytes.buffer as ArrayBuffer] : []);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(workerFile(import.meta.url, 'text-worker-thread.js'));
    const settle = (id: number) => {
      const p = this.pending.get(id);
      this.pending.delete(id);
      if (p) this.queuedChars -= p.chars;
      // An idle worker must not keep a stopping daemon alive.
      if (![...this.pending.values()].some((q) => q.worker === worker)) worker.unref();
      return p;
    };
    worker.on('message', ({ id, result, error, code, details }: { id: number; result?: unknown; error?: string; code?: ErrorCode; details?: Record<string, unknown> }) => {
      const p = settle(id);
      if (error !== undefined) p?.reject(code ? new StrataError(code, error, details) : new Error(error));
      else p?.resolve(result);
    });
    // A worker that dies fails what it held; the next job starts a new one.
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = undefined;
      for (const [id, p] of this.pending) if (p.worker === worker) settle(id)?.reject(err);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the text worker exited with ${code}`)));
    worker.unref();
    this.worker = worker;
    return worker;
  }
}
