import usearch from 'usearch';

// Peer for memory per vector: raw usearch in a fresh process. Prints the RSS growth per vector
// after adding N clustered vectors of the given dtype with the same graph parameters Strata uses.
// argv: n dims dtype

const [n, dims, dtype] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4] as 'f32' | 'f16' | 'i8'];
const kinds = { f32: usearch.ScalarKind.F32, f16: usearch.ScalarKind.F16, i8: usearch.ScalarKind.I8 };
(globalThis as { gc?: () => void }).gc?.();
const before = process.memoryUsage().rss;
const index = new usearch.Index({ dimensions: dims, metric: usearch.MetricKind.Cos, quantization: kinds[dtype], connectivity: 16, expansion_add: 128, expansion_search: 64, multi: false });
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const batch = 1000;
for (let i = 0; i < n; i += batch) {
  const m = Math.min(batch, n - i);
  const v = new Float32Array(m * dims);
  for (let j = 0; j < v.length; j++) v[j] = rand();
  index.add(BigUint64Array.from({ length: m }, (_, j) => BigInt(i + j + 1)), v, 2);
}
// Drop this script's own input buffers before measuring, so only the index counts.
(globalThis as { gc?: () => void }).gc?.();
await new Promise((r) => setTimeout(r, 200));
const after = process.memoryUsage().rss;
process.stdout.write(JSON.stringify({ bytes_per_vector: (after - before) / n, size: index.size() }) + '\n');
