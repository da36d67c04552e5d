import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { appendEngine } from './append-engine.js';
import { httpFloor } from './http-floor.js';
import { httpWrite } from './http-write.js';
import { machine, requireTools, type BenchOptions, type ResultRow } from './lib.js';
import { models } from './models.js';
import { conversations } from './conversations.js';
import { runtimes } from './runtimes.js';
import { vectors } from './vectors.js';
import { replication } from './replication.js';
import { etl } from './etl.js';
import { failover } from './failover.js';
import { compat } from './compat.js';
import { largeState } from './large-state.js';

// `npm run bench` runs every benchmark; `npm run bench -- --quick` a short version of each.
// Results go to bench/results/latest.json and a table on stdout.

const benchmarks: Array<[string, (o: BenchOptions) => Promise<ResultRow[]>]> = [
  ['http_floor', httpFloor],
  ['http_write', httpWrite],
  ['append_engine', appendEngine],
  ['models', models],
  ['conversations', conversations],
  ['runtimes', runtimes],
  ['vectors', vectors],
  ['replication', replication],
  ['etl', etl],
  ['failover', failover],
  ['compat', compat],
  ['large_state', largeState],
];

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
  const results: ResultRow[] = [];
  // Checked before anything runs: a missing program must not cost a half-finished run.
  requireTools('wrk', 'hey');
  if (!only || only === 'conversations') requireTools('redis-server');
  if (!only || only === 'failover') requireTools('etcd');
  if (!only || only === 'models') requireTools('curl');
  for (const [name, run] of benchmarks) {
    if (only && only !== name) continue;
    process.stderr.write(`bench: ${name}${quick ? ' (quick)' : ''}…\n`);
    results.push(...(await run({ quick })));
  }
  if (process.argv.includes('--no-save')) {
    for (const r of results) console.log(`| ${r.name} | ${r.metric} | ${r.value} ${r.unit} | ${r.peer} | ${r.peer_value} ${r.unit} | ${r.ratio} | ${r.notes ?? ""} |`);
    return;
  }
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  // --only refreshes its own rows and keeps the others, so latest.json always holds every
  // benchmark (each row from the run that last measured it).
  if (only && existsSync(join(dir, 'latest.json'))) {
    const fresh = new Set(results.map((r) => r.name));
    const previous = (JSON.parse(readFileSync(join(dir, 'latest.json'), 'utf8')) as { results: ResultRow[] }).results.filter((r) => !fresh.has(r.name));
    results.unshift(...previous);
  }
  const report = { machine: machine(), quick, date: new Date().toISOString(), results };
  writeFileSync(join(dir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(`| benchmark | metric | strata | peer | peer value | ratio (>1 = strata better) |`);
  console.log(`| --- | --- | --- | --- | --- | --- |`);
  for (const r of results) console.log(`| ${r.name} | ${r.metric} | ${r.value} ${r.unit} | ${r.peer} | ${r.peer_value} ${r.unit} | ${r.ratio} | ${r.notes ?? ""} |`);
  console.log(`\nwritten to ${join(dir, 'latest.json')}`);
}

main().catch((err: unknown) => {
  console.error(`bench: ${(err as Error).message}`);
  process.exitCode = 1;
});
