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
  message_append: 'conversations',
  message_read: 'conversations',
  usage_record: 'conversations',
  preferences_read: 'conversations',
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
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
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
  const self = new Map<string, number>();
  let total = 0;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => {
      const f = byId.get(id)!.callFrame;
      const key = `${f.functionName || '(anonymous)'}  ${f.url.split('/').slice(-3).join('/')}:${f.lineNumber + 1}`;
      const dt = p.timeDeltas[i] ?? 0;
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    });
  }
  process.stdout.write(`\nself time of the daemons in the ${group} benchmark (all rows of it), top 30:\n`);
  for (const [key, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) process.stdout.write(`${((100 * t) / total).toFixed(1).padStart(5)} %  ${key}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
