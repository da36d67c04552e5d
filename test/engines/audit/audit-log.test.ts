import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openTestNode } from '../../helpers/node.js';
import { parseConfig } from '../../../src/daemon/config.js';
import { createLogger } from '../../../src/daemon/logger.js';
import { StrataNode } from '../../../src/daemon/strata-node.js';

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof import('better-sqlite3');

describe('audit log', () => {
  it('records every mutation with token id, action, target and time, newest first, paginated', async () => {
    const t = await openTestNode();
    const tok = await t.call('POST', '/v1/admin/tokens', { name: 'svc', role: 'service' });
    await t.call('POST', '/v1/users', { id: 'u1', email: 'u1@example.com', tier: 'free' }, tok.body.token);
    await t.call('PUT', '/v1/users/u1/preferences', { a: 1 }, tok.body.token);
    const page1 = await t.call('GET', '/v1/admin/audit?limit=2');
    expect(page1.body.items.map((e: any) => e.action)).toEqual(['users.set_preferences', 'users.create']);
    expect(page1.body.items[0]).toMatchObject({ token_id: tok.body.id, target: 'user:u1' });
    expect(Date.parse(page1.body.items[0].time)).toBeGreaterThan(Date.now() - 60_000);
    const page2 = await t.call('GET', `/v1/admin/audit?limit=2&cursor=${page1.body.next_cursor}`);
    expect(page2.body.items.map((e: any) => e.action)).toEqual(['tokens.create', 'tokens.create']);
    expect(page2.body.next_cursor).toBeNull();
    expect((await t.call('GET', '/v1/admin/audit?cursor=garbage')).status).toBe(400);
    expect((await t.call('GET', '/v1/admin/audit?limit=5000')).status).toBe(400);
    await t.close();
  });

  it('verify names the first broken entry after a row is altered in the database file', async () => {
    const t = await openTestNode();
    for (let i = 0; i < 5; i++) await t.call('POST', '/v1/users', { id: `u${i}`, email: `u${i}@example.com`, tier: 'free' });
    expect((await t.call('GET', '/v1/admin/audit/verify')).body).toMatchObject({ ok: true, entries: 6 });
    await t.close();

    // Someone with access to the file rewrites history.
    const file = join(t.dataDir, 'strata.db');
    const raw = new Database(file);
    raw.prepare("UPDATE audit_log SET target = 'user:someone-else' WHERE seq = 4").run();
    raw.close();

    const node = await StrataNode.open(parseConfig('{}', { overrides: [`storage.data_dir=${t.dataDir}`] }), createLogger('silent'));
    const verdict = node.audit.verify();
    expect(verdict.ok).toBe(false);
    expect(verdict.entries).toBe(3);
    expect(verdict.first_broken).toEqual({ seq: 4, reason: 'the entry was altered: its hash does not match its fields' });
    await node.close();

    // Deleting a row is caught too.
    const raw2 = new Database(file);
    raw2.prepare("UPDATE audit_log SET target = 'user:u2' WHERE seq = 4").run();
    raw2.prepare('DELETE FROM audit_log WHERE seq = 2').run();
    raw2.close();
    const node2 = await StrataNode.open(parseConfig('{}', { overrides: [`storage.data_dir=${t.dataDir}`] }), createLogger('silent'));
    expect(node2.audit.verify().first_broken).toEqual({ seq: 2, reason: 'entry 2 is missing' });
    await node2.close();
  });
});
