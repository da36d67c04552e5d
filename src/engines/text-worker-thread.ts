import { parentPort } from 'node:worker_threads';
import { detectPii, redactPii } from './privacy/pii-detector.js';
import { decodeBody } from './body-decoder.js';
import { StrataError } from './errors.js';
import { toUpsertBatch } from './vectors/upsert-batch.js';
import { toQdrantBatch } from '../daemon/compat/qdrant/qdrant-points.js';

// The worker side of TextWorker: CPU work on one client text (or bulk body) per message,
// answered in arrival order, so the daemon's event loop never runs it.

export type TextJob =
  | { op: 'pii'; text: string; maxFindings: number }
  | { op: 'pii-kinds'; texts: string[] }
  | { op: 'pii-redact'; text: string }
  | { op: 'vector-upsert'; bytes: Uint8Array; msgpack: boolean; jsonDepth: number; dimensions: number; maxBatch: number }
  | { op: 'qdrant-upsert'; bytes: Uint8Array; jsonDepth: number; dimensions: number; maxBatch: number; vectorName: string | undefined };

/** What a job answers, and the buffers to move (not copy) back to the main thread. */
interface Answer {
  result: unknown;
  transfer?: ArrayBuffer[];
}

async function run(job: TextJob): Promise<unknown> {
  switch (job.op) {
    case 'vector-upsert': {
      const batch = toUpsertBatch(decodeBody(job.bytes, job.msgpack, job.jsonDepth), job.dimensions, job.maxBatch);
      return { result: batch, transfer: [batch.flat.buffer as ArrayBuffer] } satisfies Answer;
    }
    case 'qdrant-upsert': {
      const batch = toQdrantBatch(decodeBody(job.bytes, false, job.jsonDepth), job.dimensions, job.maxBatch, job.vectorName);
      return { result: batch, transfer: [batch.flat.buffer as ArrayBuffer] } satisfies Answer;
    }
    case 'pii': {
      // Only what the caller will send back crosses to the main thread.
      const findings = detectPii(job.text);
      return { findings: findings.slice(0, job.maxFindings), total: findings.length };
    }
    case 'pii-kinds': {
      const kinds = new Set<string>();
      for (const t of job.texts) for (const f of detectPii(t)) kinds.add(f.type);
      return [...kinds].sort();
    }
    case 'pii-redact': {
      const findings = detectPii(job.text);
      return { text: findings.length ? redactPii(job.text, findings) : job.text, found: findings.length };
    }
  }
}


parentPort!.on('message', ({ id, job }: { id: number; job: TextJob }) => {
  run(job).then(
    (out) => {
      if (job.op === 'vector-upsert' || job.op === 'qdrant-upsert') {
        const { result, transfer } = out as Answer;
        parentPort!.postMessage({ id, result }, transfer ?? []);
      } else parentPort!.postMessage({ id, result: out });
    },
    // A refusal keeps its code and details across the thread boundary: a bad vector is a 400
    // naming the element, not a 500.
    (err: unknown) =>
      parentPort!.postMessage({ id, error: (err as Error).message, ...(err instanceof StrataError ? { code: err.code, details: err.details } : {}) }),
  );
});
