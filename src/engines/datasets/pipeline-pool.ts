import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { workerFile } from '../worker-file.js';
import type { PipelineJob } from './pipeline-worker-thread.js';
import type { BatchResult, RowBatch, ShardColumns } from './pipeline-rows.js';

// The dataset pipeline's worker threads: every step of a row but the duplicate check, and
// the Parquet encoding of shards, run here, so a job uses every core and the event loop
// only reads lines, checks fingerprints and writes shards. Workers start on first use, each
// loads its tokenizer once (~45 MB each), and an idle pool keeps no process alive. A job
// goes to the worker with the fewest jobs waiting; results are awaited in the order the job
// needs them, whatever order workers finish in.

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

export class PipelinePool {
  private readonly slots: Array<Slot | undefined>;
  private next = 0;

  /** `size`: worker threads; default: the cores this process may use. */
  constructor(readonly size = availableParallelism()) {
    this.slots = new Array(Math.max(1, size)).fill(undefined);
  }

  rows(batch: RowBatch): Promise<BatchResult> {
    return this.run({ op: 'rows', batch });
  }

  /** A shard's bytes; the columns' token buffer is moved to the worker. */
  shard(columns: ShardColumns): Promise<Uint8Array> {
    return this.run({ op: 'shard', columns }, [columns.tokens.buffer as ArrayBuffer, columns.ends.buffer as ArrayBuffer]);
  }

  async close(): Promise<void> {
    const slots = [...this.slots];
    this.slots.fill(undefined);
    await Promise.all(slots.map((s) => s?.worker.terminate()));
  }

  private run<T>(job: PipelineJob, transfer: ArrayBuffer[] = []): Promise<T> {
    let best = 0;
    for (let i = 0; i < this.slots.length; i++) {
      const load = this.slots[i]?.pending.size ?? 0;
      if (load < (this.slots[best]?.pending.size ?? 0)) best = i;
    }
    const slot = this.slots[best] ?? this.start(best);
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      slot.worker.ref();
      slot.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      slot.worker.postMessage({ id, job }, transfer);
    });
  }

  private start(i: number): Slot {
    // Bounded heaps: a worker that a hostile row would grow past this fails its job (the
    // daemon stays up), and a small young generation keeps garbage from piling up between
    // collections (the process's peak memory is what an operator sizes a node by).
    const worker = new Worker(workerFile(import.meta.url, 'pipeline-worker-thread.js'), { resourceLimits: { maxOldGenerationSizeMb: 512, maxYoungGenerationSizeMb: 16 } });
    const slot: Slot = { worker, pending: new Map() };
    const settle = (id: number) => {
      const p = slot.pending.get(id);
      slot.pending.delete(id);
      if (slot.pending.size === 0) worker.unref();
      return p;
    };
    worker.on('message', ({ id, result, error }: { id: number; result?: unknown; error?: string }) => {
      const p = settle(id);
      if (error !== undefined) p?.reject(new Error(error));
      else p?.resolve(result);
    });
    // A worker that dies fails what it held; the next job starts a new one in its place.
    const fail = (err: Error) => {
      if (this.slots[i] === slot) this.slots[i] = undefined;
      for (const id of [...slot.pending.keys()]) settle(id)?.reject(err);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`a pipeline worker exited with ${code}`)));
    worker.unref();
    this.slots[i] = slot;
    return slot;
  }
}
