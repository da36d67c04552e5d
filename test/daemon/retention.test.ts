import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

// Retention per tier and data kind, evaluated at a chosen "now" (800 days ahead), so that
// records made during the test are as old as the policies need.

const DAY = 86_400_000;

const strata = runCli;

describe('retention', () => {
  it('removes per tier and kind exactly what its policy says, and a dry run removes nothing', async () => {
    const settings = ['tiers.free.daily_token_limit=1000000', 'tiers.free.conversation_retention_days=7', 'tiers.free.usage_retention_days=30', 'tiers.pro.daily_token_limit=1000000', 'tiers.pro.conversation_retention_days=30', 'retention.usage_days=90', 'retention.model_versions_days=730', 'retention.interval_seconds=0'];
    const t = await openTestNode(settings);
    const now = Date.now() + 800 * DAY;
    await t.call('POST', '/v1/users', { id: 'f', email: 'f@example.com', tier: 'free' });
    await t.call('POST', '/v1/users', { id: 'p', email: 'p@example.com', tier: 'pro' });
    const use = (user: string, daysAgo: number) => t.node.usage.record({ tokenId: 'test' }, { user_id: user, model: 'm', input_tokens: 1, output_tokens: 1 }, new Date(now - daysAgo * DAY));
    await use('f', 40); // free keeps 30 days: goes
    await use('f', 10); // stays
    await use('p', 40); // pro keeps the default 90: stays
    await use('p', 100); // goes
    await t.call('PUT', '/v1/models/m', {});
    for (const v of ['v1', 'v2', 'v3']) await t.call('POST', '/v1/models/m/versions', { version: v });
    expect((await t.call('PUT', '/v1/models/m/aliases/production', { version: 'v2' })).status).toBe(200);
    expect((await t.call('PUT', '/v1/models/m/rollout', { variants: [{ version: 'v2', weight: 90 }, { version: 'v3', weight: 10 }] })).status).toBe(200);
    await t.call('PUT', '/v1/models/old', {});
    await t.call('POST', '/v1/models/old/versions', { version: 'v1' });

    const plan = await t.node.runRetention(true, now);
    expect(plan.dry_run).toBe(true);
    expect(plan.usage).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ tier: 'free', days: 30, events: 1, daily_totals: 1 }),
        expect.objectContaining({ tier: 'pro', days: 90, events: 1, daily_totals: 1 }),
      ]),
    );
    // Aliased (v2) and in a rollout (v3) are kept whatever their age.
    expect(plan.model_versions.items.map((v) => `${v.model}@${v.version}`).sort()).toEqual(['m@v1', 'old@v1']);
    const events = () => (t.node.sql.db.prepare('SELECT user_id, day FROM usage_events ORDER BY user_id, day').all() as Array<{ user_id: string; day: string }>).map((r) => r.user_id);
    expect(events()).toEqual(['f', 'f', 'p', 'p']);

    const applied = await t.node.runRetention(false, now);
    expect(applied.dry_run).toBe(false);
    expect(events()).toEqual(['f', 'p']);
    expect((await t.call('GET', '/v1/models/m/versions/v1')).status).toBe(404);
    expect((await t.call('GET', '/v1/models/m/versions/v2')).status).toBe(200);
    expect((await t.call('GET', '/v1/models/m/versions/v3')).status).toBe(200);
    const again = await t.node.runRetention(true, now);
    expect(again.usage.every((u) => u.events === 0)).toBe(true);
    expect(again.model_versions.count).toBe(0);
    const audit = (await t.call('GET', '/v1/admin/audit?limit=20')).body.items.map((e: { action: string }) => e.action);
    expect(audit).toEqual(expect.arrayContaining(['retention.usage', 'retention.model_version']));
    expect((await t.call('POST', '/v1/admin/jobs/retention?dry_run=true')).body.dry_run).toBe(true);
    expect((await t.call('POST', '/v1/admin/jobs/retention?dry_run=maybe')).status).toBe(400);
    await t.close();

    // The CLI prints the same report; a dry run leaves everything where it was.
    const cli = await strata(['retention', '--dry-run', '--set', `storage.data_dir=${t.dataDir}`, ...settings.flatMap((s) => ['--set', s])]);
    expect(cli.code, cli.err).toBe(0);
    expect(JSON.parse(cli.out)).toMatchObject({ dry_run: true, model_versions: { days: 730 } });
    expect(cli.err).toMatch(/retention \(dry run: nothing removed\): \d+ conversations, \d+ usage events, \d+ model versions/);
  });
});
