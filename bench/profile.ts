import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// `npm run profile -- <row>`: runs the benchmark that holds <row> (quick) with every daemon it
// starts under --cpu-prof, then prints the functions that took the most self time, summed over
// the daemons' profiles — where the next person starts, with data.

const GROUPS: Record<string, string> = {
  http_floor: 'http_floor',
  http_write: 'http_write',
  append_engine: 'append_engine',
  message_append: 'conversations',
  message_read: 'conversations',
  openai_items_list: 'conversations',
  qdrant_search: 'vectors',
  usage_record: 'conversations',
  preferences_read: 'conversations',
  message_read_runtime: 'runtimes',
  model_upload: 'models',
  model_download_hit: 'models',
  model_download_miss: 'models',
  vector_query: 'vectors',
  vector_upsert: 'vectors',
  replication_lag: 'replication',
  restore_throughput: 'replication',
  etl_throughput: 'etl',
};

interface Profile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

const row = process.argv[2];
const group = row && (GROUPS[row] ?? Object.values(GROUPS).find((g) => g === row));
if (!group) {
  process.stderr.write(`usage: npm run profile -- <row>, one of: ${Object.keys(GROUPS).join(', ')}\n`);
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), 'strata-profile-'));
try {
  const run = fileURLToPath(new URL('./run.js', import.meta.url));
  process.stderr.write(`profile: running the ${group} benchmark (quick) with the daemon under --cpu-prof…\n`);
  const r = spawnSync(process.execPath, [run, '--quick', `--only=${group}`, '--no-save'], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, STRATA_PROFILE_DIR: dir } });
  if (r.status !== 0) process.exit(r.status ?? 1);
  // Self time: where the CPU was. Total time: the function and what it called (each function
  // counted once per sample, so recursion does not count twice) — the cost of a whole path.
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const keyOf = (id: number) => {
      const f = byId.get(id)!.callFrame;
      return `${f.functionName || '(anonymous)'}  ${f.url.split('/').slice(-3).join('/')}:${f.lineNumber + 1}`;
    };
    p.samples.forEach((id, i) => {
      const dt = p.timeDeltas[i] ?? 0;
      self.set(keyOf(id), (self.get(keyOf(id)) ?? 0) + dt);
      const seen = new Set<string>();
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) seen.add(keyOf(at));
      for (const k of seen) inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
      total += dt;
    });
  }
  const busy = total - (self.get('(idle)  :1') ?? 0);
  const print = (title: string, m: Map<string, number>) => {
    process.stdout.write(`\n${title}, top 30 (% of busy time):\n`);
    for (const [key, t] of [...m].filter(([k]) => !k.startsWith('(idle)') && !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, 30)) {
      process.stdout.write(`${((100 * t) / busy).toFixed(1).padStart(5)} %  ${key}\n`);
    }
  };
  process.stdout.write(`\nprofiled ${(total / 1e6).toFixed(1)} s, busy ${((100 * busy) / total).toFixed(0)} %\n`);
  print(`self time in the ${group} benchmark (all its rows)`, self);
  print('total time (self and callees)', inclusive);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
