import { CacheUnavailable, type CounterSpec } from '../cache/cache.js';
import type { CacheTier } from '../cache/cache-tier.js';
import { QuotaExceeded } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';

// Token usage and quotas. The quota gate is a counter in the cache tier, incremented by one
// atomic check-and-add (in-process for the memory driver, one Lua script on Redis, so nodes
// that share a Redis share the limit). Only a call that passed the gate is written, through
// group commit, as a usage event; a refused call writes and counts nothing.
//
// SQLite stays the truth: a missing counter (new day, evicted, Redis restarted) starts from
// the total in usage_daily. While Redis is unreachable the gate moves into the write
// transaction itself and checks usage_daily there — exact for this node, though nodes no
// longer see each other's usage until Redis is back.

export const usageMigrations: Migration[] = [
  {
    engine: 'usage',
    version: 1,
    name: 'usage events and daily totals',
    sql: `
      CREATE TABLE usage_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_micros INTEGER NOT NULL,
        day TEXT NOT NULL,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX usage_events_by_user ON usage_events (user_id, id);
      -- Maintained in the same transaction as each event: quota seeds and summaries read this.
      CREATE TABLE usage_daily (
        user_id TEXT NOT NULL,
        day TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_micros INTEGER NOT NULL,
        PRIMARY KEY (user_id, day, model)
      ) STRICT, WITHOUT ROWID;
    `,
  },
];

export interface Limits {
  daily: number;
  monthly?: number | undefined;
}

export interface Price {
  input_micros_per_million_tokens: number;
  output_micros_per_million_tokens: number;
}

export interface UsageInput {
  user_id: string;
  model: string;
  input_tokens: number;
  output_tokens: number;
}

export interface UsageAnswer {
  period: string;
  used_tokens: number;
  limit_tokens: number;
  remaining_tokens: number;
  month?: { period: string; used_tokens: number; limit_tokens: number; remaining_tokens: number };
}

interface UsageEvent extends UsageInput {
  cost_micros: number;
  day: string;
  created_at: string;
}

export interface UsageSummaryRow {
  day?: string;
  model?: string;
  input_tokens: number;
  output_tokens: number;
  cost_micros: number;
}

export class UsageMeter {
  private readonly recorded: ChangeType<UsageEvent>;
  private readonly pruned: ChangeType<{ tier: string; before_day: string }>;
  private readonly userErased: ChangeType<{ user_id: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly cache: CacheTier,
    /** The user's tier limits; throws NotFound for an unknown user. */
    private readonly limitsOf: (userId: string) => Limits,
    private readonly priceOf: (model: string) => Price | undefined,
    private readonly events: { refused?(): void } = {},
  ) {
    this.recorded = changes.define<UsageEvent>('usage', 'record', (db, e) => {
      db.prepare(
        `INSERT INTO usage_events (user_id, model, input_tokens, output_tokens, cost_micros, day, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ).run(e.user_id, e.model, e.input_tokens, e.output_tokens, e.cost_micros, e.day, e.created_at);
      db.prepare(
        `INSERT INTO usage_daily (user_id, day, model, input_tokens, output_tokens, cost_micros) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (user_id, day, model) DO UPDATE SET input_tokens = input_tokens + excluded.input_tokens,
           output_tokens = output_tokens + excluded.output_tokens, cost_micros = cost_micros + excluded.cost_micros`,
      ).run(e.user_id, e.day, e.model, e.input_tokens, e.output_tokens, e.cost_micros);
    });
    // Retention: a tier's usage older than its window. Replayed as a rule, not a list of rows,
    // so a replica deletes exactly what the primary did (the users table is the same).
    this.pruned = changes.define<{ tier: string; before_day: string }>('usage', 'prune', (db, p) => {
      for (const table of ['usage_events', 'usage_daily']) {
        db.prepare(`DELETE FROM ${table} WHERE day < ? AND user_id IN (SELECT id FROM users WHERE tier = ?)`).run(p.before_day, p.tier);
      }
    });
    this.userErased = changes.define<{ user_id: string }>('usage', 'erase_user', (db, p) => {
      db.prepare('DELETE FROM usage_events WHERE user_id = ?').run(p.user_id);
      db.prepare('DELETE FROM usage_daily WHERE user_id = ?').run(p.user_id);
    });
  }

  /** Usage events and daily totals of a tier's users from before `beforeDay` (YYYY-MM-DD). */
  countOlder(tier: string, beforeDay: string): { events: number; daily: number } {
    const count = (table: string) =>
      this.db.prepare<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE day < ? AND user_id IN (SELECT id FROM users WHERE tier = ?)`).get(beforeDay, tier)!.n;
    return { events: count('usage_events'), daily: count('usage_daily') };
  }

  prune(tx: Tx, tier: string, beforeDay: string): void {
    tx.apply(this.pruned, { tier, before_day: beforeDay });
  }

  /** Inside an erasure: the user's usage events and daily totals. */
  eraseUser(tx: Tx, userId: string): void {
    tx.apply(this.userErased, { user_id: userId });
  }

  async record(actor: Actor, input: UsageInput, now = new Date()): Promise<UsageAnswer> {
    const limits = this.limitsOf(input.user_id);
    const tokens = input.input_tokens + input.output_tokens;
    const day = now.toISOString().slice(0, 10);
    const month = day.slice(0, 7);
    const counters: CounterSpec[] = [
      { key: `quota:{${input.user_id}}:d:${day}`, max: limits.daily, ttlSeconds: secondsUntil(nextDay(now)) + 3600, initial: () => this.usedSince(input.user_id, day, day) },
    ];
    if (limits.monthly !== undefined) {
      counters.push({
        key: `quota:{${input.user_id}}:m:${month}`,
        max: limits.monthly,
        ttlSeconds: secondsUntil(nextMonth(now)) + 3600,
        initial: () => this.usedSince(input.user_id, `${month}-01`, day),
      });
    }
    let gate: number[] | undefined;
    try {
      const r = await this.cache.increment(counters, tokens);
      if (!r.applied) this.refuse(counters, r.values, tokens);
      gate = r.values;
    } catch (err) {
      if (!(err instanceof CacheUnavailable)) throw err;
    }
    const event: UsageEvent = { ...input, cost_micros: this.cost(input), day, created_at: now.toISOString() };
    let values: number[];
    try {
      values = await this.writer.write(actor, (tx) => {
        // Without the cache the check happens here, where writes are serialised.
        const used = gate ?? counters.map((c) => this.usedSince(input.user_id, c.key.includes(':m:') ? `${month}-01` : day, day));
        if (!gate && counters.some((c, i) => used[i]! + tokens > c.max)) this.refuse(counters, used, tokens);
        tx.apply(this.recorded, event);
        return gate ?? used.map((u) => u + tokens);
      });
    } catch (err) {
      // Not written, so not counted: give the tokens back to the gate.
      if (gate) await this.cache.increment(counters.map((c) => ({ ...c, max: Number.MAX_SAFE_INTEGER })), -tokens).catch(() => undefined);
      throw err;
    }
    const answer: UsageAnswer = { period: day, used_tokens: values[0]!, limit_tokens: limits.daily, remaining_tokens: Math.max(0, limits.daily - values[0]!) };
    if (limits.monthly !== undefined) {
      answer.month = { period: month, used_tokens: values[1]!, limit_tokens: limits.monthly, remaining_tokens: Math.max(0, limits.monthly - values[1]!) };
    }
    return answer;
  }

  summary(userId: string, query: { from: string; to: string; groupBy: 'day' | 'model' }): UsageSummaryRow[] {
    const column = query.groupBy === 'day' ? 'day' : 'model';
    return this.db
      .prepare<UsageSummaryRow>(
        `SELECT ${column}, SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, SUM(cost_micros) AS cost_micros
         FROM usage_daily WHERE user_id = ? AND day >= ? AND day <= ? GROUP BY ${column} ORDER BY ${column}`,
      )
      .all(userId, query.from, query.to);
  }

  /** Tokens the user used on days from..to (inclusive, YYYY-MM-DD), per SQLite. */
  private usedSince(userId: string, from: string, to: string): number {
    const row = this.db
      .prepare<{ used: number | null }>('SELECT SUM(input_tokens + output_tokens) AS used FROM usage_daily WHERE user_id = ? AND day >= ? AND day <= ?')
      .get(userId, from, to);
    return row?.used ?? 0;
  }

  private cost(input: UsageInput): number {
    const price = this.priceOf(input.model);
    if (!price) return 0;
    return Math.round((input.input_tokens * price.input_micros_per_million_tokens + input.output_tokens * price.output_micros_per_million_tokens) / 1e6);
  }

  private refuse(counters: CounterSpec[], values: number[], tokens: number): never {
    this.events.refused?.();
    const i = Math.max(0, counters.findIndex((c, j) => values[j]! + tokens > c.max));
    const period = counters[i]!.key.includes(':m:') ? 'monthly' : 'daily';
    throw new QuotaExceeded(`the ${period} token limit of ${counters[i]!.max} would be passed: ${values[i]} used, ${tokens} asked`, {
      period,
      used_tokens: values[i],
      limit_tokens: counters[i]!.max,
    });
  }
}

function nextDay(d: Date): Date {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1));
}

function nextMonth(d: Date): Date {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
}

function secondsUntil(t: Date): number {
  return Math.max(1, Math.ceil((t.getTime() - Date.now()) / 1000));
}
