// Clustered synthetic vectors: recall measured on uniform random vectors means nothing (all
// distances look alike), so points are drawn around a few centres, as real embeddings are.

/** A small seeded PRNG (mulberry32) so every run sees the same data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

export function clustered(n: number, dims: number, clusters: number, seed = 1, spread = 0.35) {
  const r = rng(seed);
  const centres = Array.from({ length: clusters }, () => Array.from({ length: dims }, () => gauss(r)));
  const points: number[][] = [];
  const cluster: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = i % clusters;
    cluster.push(c);
    points.push(centres[c]!.map((x) => x + gauss(r) * spread));
  }
  const queries = (m: number, qseed = seed + 1) => {
    const q = rng(qseed);
    return Array.from({ length: m }, (_, i) => centres[i % clusters]!.map((x) => x + gauss(q) * spread));
  };
  return { points, cluster, queries };
}

/** Exact cosine top-k over the given candidate indexes (all points when omitted). */
export function exactTopK(points: number[][], query: number[], k: number, candidates?: number[]): number[] {
  const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const qn = norm(query);
  const idx = candidates ?? points.map((_, i) => i);
  return idx
    .map((i) => {
      const p = points[i]!;
      let dot = 0;
      for (let d = 0; d < p.length; d++) dot += p[d]! * query[d]!;
      return { i, s: dot / (norm(p) * qn) };
    })
    .sort((a, b) => b.s - a.s)
    .slice(0, k)
    .map((x) => x.i);
}

export function recall(found: string[], truth: string[]): number {
  const t = new Set(truth);
  return found.filter((f) => t.has(f)).length / truth.length;
}
