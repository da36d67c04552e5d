import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/daemon/config.js';
import { CLI, ROOT } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

// The operations pack: the Grafana dashboard and the Prometheus rules may only use metrics
// the daemon registers at start (a panel over a metric that appears later shows "No data"
// and an alert over one never fires); promtool checks and unit-tests the rules; the
// production example names every config key and passes `strata check-config`.

const DEPLOY = join(ROOT, 'deploy');
const HAS_PROMTOOL = spawnSync('promtool', ['--version']).status === 0;

/** Metric names a PromQL expression reads (histogram series map to their family). */
function metricsIn(expr: string): string[] {
  const names = expr.match(/\b(?:strata|process|nodejs)_[a-z0-9_]+\b/g) ?? [];
  return names.map((n) => n.replace(/_(bucket|count|sum)$/, ''));
}

async function registeredAtStart(): Promise<{ names: Set<string>; labels: Map<string, Set<string>> }> {
  const t = await openTestNode();
  try {
    const res = await t.app.request('/metrics');
    const text = await res.text();
    const labels = new Map<string, Set<string>>();
    for (const m of t.node.metrics.registry.getMetricsAsArray() as unknown as Array<{ name: string; labelNames?: string[] }>) labels.set(m.name, new Set(m.labelNames ?? []));
    return { names: new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!)), labels };
  } finally {
    await t.close();
  }
}

/** Labels an expression groups or filters by, which some strata_* metric in it must have. */
function labelProblems(expr: string, labels: Map<string, Set<string>>): string[] {
  const metrics = metricsIn(expr).filter((m) => m.startsWith('strata_') && labels.has(m));
  if (metrics.length === 0) return [];
  const used = new Set<string>();
  for (const [, list] of expr.matchAll(/\bby \(([^)]*)\)/g)) for (const l of list!.split(',')) used.add(l.trim());
  for (const [, sel] of expr.matchAll(/strata_[a-z0-9_]+\{([^}]*)\}/g)) for (const [, l] of sel!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) used.add(l!);
  return [...used].filter((l) => l && !['le', 'instance', 'job'].includes(l) && !metrics.some((m) => labels.get(m)!.has(l))).map((l) => `label "${l}" in ${expr}`);
}

describe('operations pack', () => {
  it('every metric the dashboard and the alert rules use is registered when the daemon starts', async () => {
    const { names: registered, labels } = await registeredAtStart();
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana/dashboards/strata.json'), 'utf8')) as { panels: Array<{ type: string; title: string; targets?: Array<{ expr: string }> }> };
    const rules = readFileSync(join(DEPLOY, 'prometheus/alerts.yml'), 'utf8');
    const used = new Map<string, string>();
    for (const p of dashboard.panels) for (const t of p.targets ?? []) for (const m of metricsIn(t.expr)) used.set(m, `panel "${p.title}"`);
    for (const m of metricsIn(rules)) used.set(m, 'alerts.yml');
    expect(used.size).toBeGreaterThan(30);
    const missing = [...used].filter(([m]) => !registered.has(m)).map(([m, where]) => `${m} (${where})`);
    expect(missing).toEqual([]);
    // And the labels they group and filter by exist on those metrics.
    const exprs = [...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)), ...[...rules.matchAll(/expr: (\|\n(?:\s{10}.*\n)+|.*)/g)].map((m) => m[1]!)];
    expect(exprs.flatMap((e) => labelProblems(e, labels))).toEqual([]);
  });

  it('the dashboard has the six sections, unique panel ids, a query on every panel, and fits a 24-column grid', () => {
    const d = JSON.parse(readFileSync(join(DEPLOY, 'grafana/dashboards/strata.json'), 'utf8')) as {
      uid: string;
      panels: Array<{ id: number; type: string; title: string; gridPos: { x: number; w: number }; targets?: Array<{ expr: string }> }>;
    };
    expect(d.uid).toBe('strata-overview');
    expect(d.panels.filter((p) => p.type === 'row').map((p) => p.title)).toEqual(['Overview', 'Storage', 'Conversations and quotas', 'Vectors', 'Replication and backups', 'Process']);
    expect(new Set(d.panels.map((p) => p.id)).size).toBe(d.panels.length);
    for (const p of d.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type !== 'row') expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
    const provisioning = readFileSync(join(DEPLOY, 'grafana/provisioning/dashboards/strata.yaml'), 'utf8');
    expect(provisioning).toMatch(/type: file/);
  });

  it.skipIf(!HAS_PROMTOOL && process.env.CI !== 'true')('promtool checks the rules and the scrape config, and every alert fires and clears in its unit test', () => {
    expect(HAS_PROMTOOL, 'promtool is required under CI (apt-get install prometheus)').toBe(true);
    const run = (args: string[]) => spawnSync('promtool', args, { cwd: join(DEPLOY, 'prometheus'), encoding: 'utf8' });
    const check = run(['check', 'rules', 'alerts.yml']);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: 10 rules found/);
    const config = run(['check', 'config', 'prometheus.yml']);
    expect(config.status, config.stdout + config.stderr).toBe(0);
    const tests = run(['test', 'rules', 'alerts.test.yml']);
    expect(tests.status, tests.stdout + tests.stderr).toBe(0);
    // Each alert has a test that makes it fire.
    const rules = readFileSync(join(DEPLOY, 'prometheus/alerts.yml'), 'utf8');
    const testFile = readFileSync(join(DEPLOY, 'prometheus/alerts.test.yml'), 'utf8');
    for (const [, name] of rules.matchAll(/- alert: (\w+)/g)) expect(testFile, name).toMatch(new RegExp(`alertname: ${name}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
  });

  it('the production example names every config key and passes strata check-config', () => {
    const keys: string[] = [];
    const walk = (s: unknown, path: string[]): void => {
      const def = (s as { _zod?: { def?: Record<string, any> } })._zod?.def;
      if (!def) return;
      if (def.type === 'object') for (const [k, v] of Object.entries(def.shape as Record<string, unknown>)) (keys.push([...path, k].join('.')), walk(v, [...path, k]));
      else if (['optional', 'default', 'prefault', 'nullable', 'readonly', 'catch'].includes(def.type)) walk(def.innerType, path);
      else if (def.type === 'pipe') (walk(def.in, path), walk(def.out, path));
      else if (def.type === 'record') walk(def.valueType, [...path, '*']);
      else if (def.type === 'union') for (const o of def.options as unknown[]) walk(o, path);
    };
    walk(configSchema, []);
    const text = readFileSync(join(ROOT, 'config/production.example.yaml'), 'utf8');
    const missing = keys.filter((k) => !new RegExp(`^\\s*#?\\s*(- )?${k.split('.').pop()}:`, 'm').test(text));
    expect(keys.length).toBeGreaterThan(100);
    expect(missing).toEqual([]);
    const env = { ...process.env, MINIO_ACCESS_KEY: 'ak', MINIO_SECRET_KEY: 'sk', ARCHIVE_ACCESS_KEY: 'a2', ARCHIVE_SECRET_KEY: 's2', BACKUP_ACCESS_KEY: 'b1', BACKUP_SECRET_KEY: 'b2' };
    const r = spawnSync(process.execPath, [CLI, 'check-config', '--config', join(ROOT, 'config/production.example.yaml')], { env, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^config ok/);
  });
});
