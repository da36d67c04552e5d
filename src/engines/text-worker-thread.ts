import { parentPort } from 'node:worker_threads';
import { loadTokenizer, type TokenizerName } from './datasets/tokenizer.js';
import { detectPii } from './privacy/pii-detector.js';

// The worker side of TextWorker: CPU work on one client text per message, answered in
// arrival order, so the daemon's event loop never runs it.

export type TextJob = { op: 'pii'; text: string } | { op: 'tokenize'; encoding: TokenizerName; text: string };

async function run(job: TextJob): Promise<unknown> {
  if (job.op === 'pii') return detectPii(job.text);
  return (await loadTokenizer(job.encoding)).encode(job.text);
}

parentPort!.on('message', ({ id, job }: { id: number; job: TextJob }) => {
  run(job).then(
    (result) => parentPort!.postMessage({ id, result }),
    (err: unknown) => parentPort!.postMessage({ id, error: (err as Error).message }),
  );
});
