import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

async function setup() {
  const t = await openTestNode();
  await t.call('POST', '/v1/users', { id: 'b', email: 'b@example.com', tier: 'pro' });
  await t.call('POST', '/v1/users', { id: 'c', email: 'c@example.com', tier: 'pro' });
  return t;
}

const entry = (ref: string, amount = 1_500_000, user = 'b') => ({ user_id: user, kind: 'charge', amount_micros: amount, currency: 'USD', ref });

describe('billing ledger', () => {
  it('appends hash-chained entries; the same ref returns the first entry', async () => {
    const t = await setup();
    const first = await t.call('POST', '/v1/billing/entries', entry('inv-1'));
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ seq: 1, user_id: 'b', kind: 'charge', amount_micros: 1_500_000, currency: 'USD', ref: 'inv-1', prev_hash: '0'.repeat(64) });
    expect(first.body.hash).toMatch(/^[0-9a-f]{64}$/);
    const second = await t.call('POST', '/v1/billing/entries', { ...entry('inv-2', -500_000), kind: 'refund' });
    expect(second.body.prev_hash).toBe(first.body.hash);
    const again = await t.call('POST', '/v1/billing/entries', entry('inv-1'));
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    const clash = await t.call('POST', '/v1/billing/entries', entry('inv-1', 9));
    expect(clash.status).toBe(409);
    expect(clash.body.error.code).toBe('conflict');
    // Concurrent retries of one ref still make one entry.
    const burst = await Promise.all(Array.from({ length: 20 }, () => t.call('POST', '/v1/billing/entries', entry('inv-3'))));
    expect(burst.filter((r) => r.status === 201)).toHaveLength(1);
    expect(new Set(burst.map((r) => r.body.seq))).toEqual(new Set([3]));
    const verdict = await t.call('GET', '/v1/billing/verify');
    expect(verdict.body).toMatchObject({ ok: true, entries: 3 });
    expect(verdict.body.head_hash).toBe(burst[0]!.body.hash);
    expect(await t.node.metrics.render()).toMatch(/strata_billing_ledger_entries 3/);
    await t.close();
  });

  it('lists entries in order, per user, with pagination', async () => {
    const t = await setup();
    for (let i = 0; i < 5; i++) await t.call('POST', '/v1/billing/entries', entry(`b-${i}`, 100 + i));
    await t.call('POST', '/v1/billing/entries', entry('c-0', 7, 'c'));
    const p1 = await t.call('GET', '/v1/billing/entries?user_id=b&limit=3');
    const p2 = await t.call('GET', `/v1/billing/entries?user_id=b&limit=3&cursor=${p1.body.next_cursor}`);
    expect([...p1.body.items, ...p2.body.items].map((e: { ref: string }) => e.ref)).toEqual(['b-0', 'b-1', 'b-2', 'b-3', 'b-4']);
    expect(p2.body.next_cursor).toBeNull();
    expect((await t.call('GET', '/v1/billing/entries')).body.items).toHaveLength(6);
    await t.close();
  });

  it('has no update or delete path: SQL refuses, and an edit behind its back is detected', async () => {
    const t = await setup();
    for (let i = 0; i < 4; i++) await t.call('POST', '/v1/billing/entries', entry(`r-${i}`, 1000 * (i + 1)));
    const file = join(t.dataDir, 'billing.db');
    const db = new Database(file);
    expect(() => db.prepare('UPDATE ledger SET amount_micros = 1 WHERE seq = 2').run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM ledger WHERE seq = 4').run()).toThrow(/append-only/);
    // Someone with write access to the file drops the trigger and lowers a charge.
    db.exec('DROP TRIGGER ledger_no_update');
    db.prepare('UPDATE ledger SET amount_micros = 1 WHERE seq = 2').run();
    db.close();
    const verdict = await t.call('GET', '/v1/billing/verify');
    expect(verdict.body).toMatchObject({ ok: false, first_broken: { seq: 2 } });
    await t.close();
  });

  it('detects a deleted entry', async () => {
    const t = await setup();
    for (let i = 0; i < 3; i++) await t.call('POST', '/v1/billing/entries', entry(`d-${i}`));
    const db = new Database(join(t.dataDir, 'billing.db'));
    db.exec('DROP TRIGGER ledger_no_delete');
    db.prepare('DELETE FROM ledger WHERE seq = 2').run();
    db.close();
    expect((await t.call('GET', '/v1/billing/verify')).body).toMatchObject({ ok: false, first_broken: { seq: 2, reason: 'entry 2 is missing' } });
    await t.close();
  });

  it('refuses bad entries with 400 and writes nothing', async () => {
    const t = await setup();
    for (const body of [
      { ...entry('x'), kind: 'gift' },
      { ...entry('x'), amount_micros: 0 },
      { ...entry('x'), amount_micros: 1.5 },
      { ...entry('x'), currency: 'usd' },
      { ...entry('x'), ref: '' },
      { ...entry('x'), extra: 1 },
      { user_id: 'b', kind: 'charge', amount_micros: 1, currency: 'USD' },
    ]) {
      const r = await t.call('POST', '/v1/billing/entries', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('invalid_input');
    }
    expect((await t.call('POST', '/v1/billing/entries', entry('x', 5, 'ghost'))).status).toBe(404);
    expect((await t.call('GET', '/v1/billing/verify')).body).toMatchObject({ ok: true, entries: 0 });
    await t.close();
  });
});
