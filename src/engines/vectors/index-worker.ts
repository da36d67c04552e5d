import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import usearch, { type BatchMatches, type Index, type Matches } from 'usearch';

// One usearch HNSW index, owned by this worker thread. usearch's calls are synchronous native
// code (a search batch, an index build or a save can take far more than 20 ms), so they run
// here, never on the daemon's event loop. Messages are handled one at a time in arrival
// order, which is what gives read-your-writes: an add sent after a commit is applied before
// any search sent after it.
//
// This worker never sees SQLite: the main thread sends it the vectors to add or remove and
// tells it when to save; the index is derived state and may be rebuilt at any time.

export interface IndexConfig {
  dimensions: number;
  metric: 'cos' | 'l2' | 'ip';
  dtype: 'f32' | 'f16' | 'i8';
  connectivity: number;
  expansion_add: number;
  expansion_search: number;
}

export type WorkerRequest =
  | { op: 'init'; config: IndexConfig; file?: string | undefined; sha256?: string | undefined; lsn?: number | undefined; tombstones?: number | undefined }
  | { op: 'add'; keys: BigUint64Array; vectors: Float32Array; lsn: number }
  | { op: 'remove'; keys: BigUint64Array; lsn: number }
  | { op: 'search'; vectors: Float32Array; k: number }
  | { op: 'exact'; keys: BigUint64Array; dataset: Float32Array; vector: Float32Array; k: number }
  | { op: 'save'; path: string }
  | { op: 'stats' };

export interface IndexStats {
  size: number;
  tombstones: number;
  lsn: number;
}

const CORES = availableParallelism();

const METRIC = { cos: usearch.MetricKind.Cos, l2: usearch.MetricKind.L2sq, ip: usearch.MetricKind.IP } as const;
const DTYPE = { f32: usearch.ScalarKind.F32, f16: usearch.ScalarKind.F16, i8: usearch.ScalarKind.I8 } as const;

let index: Index | undefined;
let config: IndexConfig | undefined;
let tombstones = 0;
/** The LSN of the last change applied: a saved file includes everything up to it. */
let lsn = 0;
/** What the file on disk holds, when nothing changed since it was written or loaded. */
let onDisk: { path: string; bytes: number; sha256: string } | undefined;

function handle(msg: WorkerRequest): unknown {
  switch (msg.op) {
    case 'init': {
      config = msg.config;
      index = new usearch.Index({
        dimensions: config.dimensions,
        metric: METRIC[config.metric],
        quantization: DTYPE[config.dtype],
        connectivity: config.connectivity,
        expansion_add: config.expansion_add,
        expansion_search: config.expansion_search,
        multi: false,
      });
      tombstones = 0;
      lsn = 0;
      onDisk = undefined;
      if (msg.file) {
        // usearch trusts the file it loads: a torn or altered one can crash the process. The
        // sidecar's checksum is checked first, so only a file this worker wrote is loaded.
        if (!msg.sha256 || fileSha256(msg.file) !== msg.sha256) throw new Error('index file checksum does not match its sidecar');
        index.load(msg.file);
        // The file holds everything up to its sidecar's LSN. Without taking that over, the next
        // save wrote "lsn": 0 and the start after it discarded the file and rebuilt (0.7.0).
        lsn = msg.lsn ?? 0;
        tombstones = msg.tombstones ?? 0;
        onDisk = { path: msg.file, bytes: statSync(msg.file).size, sha256: msg.sha256 };
      }
      if (index.dimensions() !== config.dimensions) throw new Error(`index file has ${index.dimensions()} dimensions, expected ${config.dimensions}`);
      return { size: index.size() };
    }
    case 'add': {
      const ix = need();
      // usearch throws on a key it already holds: an upsert is remove + add, and the removed
      // slot stays as a tombstone until compaction.
      const present = ix.contains(msg.keys) as boolean[] | boolean;
      const existing = msg.keys.filter((_, i) => (Array.isArray(present) ? present[i] : present));
      if (existing.length > 0) {
        ix.remove(existing);
        tombstones += existing.length;
      }
      if (msg.keys.length > 0) {
        // A parallel batch search needs a search context per thread, and usearch sizes them at
        // every add (or load) to that call's thread count. Inserting in parallel changes the
        // graph (recall fell by 2 points in the tests), so all but the last vector go in on one
        // thread, and the last "on CORES threads" — one task, the same insertion — which
        // leaves CORES contexts behind.
        const n = msg.keys.length;
        const d = config!.dimensions;
        if (n > 1) ix.add(msg.keys.subarray(0, n - 1), msg.vectors.subarray(0, (n - 1) * d), 1);
        ix.add(msg.keys.subarray(n - 1), msg.vectors.subarray((n - 1) * d), CORES);
        onDisk = undefined;
      }
      lsn = Math.max(lsn, msg.lsn);
      return { size: ix.size() };
    }
    case 'remove': {
      const ix = need();
      const removed = msg.keys.length ? (ix.remove(msg.keys) as number[] | number) : 0;
      const n = Array.isArray(removed) ? removed.reduce((a, b) => a + b, 0) : removed;
      tombstones += n;
      if (n > 0) onDisk = undefined;
      // With no keys this only moves the LSN: the index holds every vector change up to it.
      lsn = Math.max(lsn, msg.lsn);
      return { size: ix.size() };
    }
    case 'search': {
      // One or more queries (n × dimensions), searched as one native batch on up to a thread
      // per core: the main thread sends every query that arrived while the previous batch ran.
      const ix = need();
      const n = msg.vectors.length / config!.dimensions;
      const k = Math.min(msg.k, ix.size());
      if (k === 0) return { keys: new BigUint64Array(0), distances: new Float32Array(0), counts: new Uint32Array(n), k: 0 };
      let m: Matches | BatchMatches;
      try {
        m = ix.search(msg.vectors, k, Math.min(n, CORES)) as Matches | BatchMatches;
      } catch (err) {
        // Fewer contexts than threads (an index state this worker did not foresee): one thread.
        if (!/Reserve capacity/.test((err as Error).message)) throw err;
        m = ix.search(msg.vectors, k, 1) as Matches | BatchMatches;
      }
      if (n === 1) {
        const one = m as Matches;
        return { keys: one.keys, distances: one.distances, counts: Uint32Array.of(one.keys.length), k: one.keys.length };
      }
      const batch = m as BatchMatches;
      return { keys: batch.keys, distances: batch.distances, counts: Uint32Array.from(batch.counts, Number), k };
    }
    case 'exact': {
      if (!config) throw new Error('index not initialised');
      const n = msg.keys.length;
      if (n === 0) return { keys: new BigUint64Array(0), distances: new Float32Array(0) };
      const m = usearch.exactSearch(msg.dataset, msg.vector, config.dimensions, Math.min(msg.k, n), METRIC[config.metric], 1) as Matches;
      // exactSearch answers row numbers of the dataset; turn them back into keys.
      const keys = new BigUint64Array(m.keys.length);
      for (let i = 0; i < m.keys.length; i++) keys[i] = msg.keys[Number(m.keys[i])]!;
      return { keys, distances: m.distances };
    }
    case 'save': {
      const ix = need();
      const sidecar = (bytes: number, sha256: string) => JSON.stringify({ lsn, size: ix.size(), bytes, sha256, dimensions: config!.dimensions, tombstones });
      // Unchanged since it was written or loaded: only the sidecar's LSN moves. An idle
      // collection's sidecar would otherwise fall behind the change log, and once the log was
      // pruned past it the next start rebuilt the index for nothing.
      if (onDisk && onDisk.path === msg.path) {
        writeFileSync(`${msg.path}.json.tmp`, sidecar(onDisk.bytes, onDisk.sha256));
        renameSync(`${msg.path}.json.tmp`, `${msg.path}.json`);
        return { lsn, bytes: onDisk.bytes, size: ix.size() };
      }
      // Index and sidecar are both written beside their names before either is renamed, so a
      // full disk leaves the previous pair whole. Only a crash between the two renames leaves a
      // new index with the old sidecar; its checksum then fails and the next start rebuilds it
      // (derived state: a rebuild, never a lost vector).
      const tmp = `${msg.path}.tmp`;
      try {
        ix.save(tmp);
        const bytes = statSync(tmp).size;
        const sha256 = fileSha256(tmp);
        writeFileSync(`${msg.path}.json.tmp`, sidecar(bytes, sha256));
        renameSync(tmp, msg.path);
        renameSync(`${msg.path}.json.tmp`, `${msg.path}.json`);
        onDisk = { path: msg.path, bytes, sha256 };
        return { lsn, bytes, size: ix.size() };
      } finally {
        // A save cut short (a full disk) leaves no half-written file taking the space.
        rmSync(tmp, { force: true });
        rmSync(`${msg.path}.json.tmp`, { force: true });
      }
    }
    case 'stats': {
      return { size: index?.size() ?? 0, tombstones, lsn } satisfies IndexStats;
    }
  }
}

function fileSha256(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function need(): Index {
  if (!index) throw new Error('index not initialised');
  return index;
}

parentPort!.on('message', ({ id, msg }: { id: number; msg: WorkerRequest }) => {
  try {
    parentPort!.postMessage({ id, ok: true, result: handle(msg) });
  } catch (err) {
    parentPort!.postMessage({ id, ok: false, error: (err as Error).message });
  }
});
