import type { ConversationArchive } from '../conversations/conversation-archive.js';
import type { ModelRegistry } from '../models/model-registry.js';
import type { Actor, Writer } from '../sql/writer.js';
import type { UsageMeter } from '../usage/usage-meter.js';

// Retention policies per tier and data kind, applied by one scheduled job (and shown without
// applying by `strata retention --dry-run`):
//   conversations  tiers.<t>.conversation_retention_days, after the last message (the archive
//                  job deletes them; compliance copies of archives follow their own window)
//   usage          tiers.<t>.usage_retention_days, else retention.usage_days: events and daily totals
//   model versions retention.model_versions_days after creation, unless an alias or a rollout
//                  points at them; their blobs then go with garbage collection
// Billing entries and the audit log are never pruned (append-only records), and checkpoints
// follow their own keep_last / keep_every policy.

const DAY_MS = 86_400_000;

export interface RetentionPolicy {
  tiers: Record<string, { usageDays: number; conversationDays: number }>;
  modelVersionsDays: number;
}

export interface RetentionReport {
  dry_run: boolean;
  at: string;
  conversations: { count: number; days_by_tier: Record<string, number> };
  usage: Array<{ tier: string; days: number; before_day: string; events: number; daily_totals: number }>;
  model_versions: { days: number; created_before: string; count: number; items: Array<{ model: string; version: string; created_at: string }> };
}

export class RetentionJob {
  constructor(
    private readonly writer: Writer,
    private readonly usage: UsageMeter,
    private readonly models: ModelRegistry,
    private readonly conversations: ConversationArchive,
    private readonly policy: RetentionPolicy,
  ) {}

  /** What a run at `now` removes, without removing anything. */
  plan(now = Date.now()): RetentionReport {
    const usage = Object.entries(this.policy.tiers).map(([tier, p]) => {
      const beforeDay = new Date(now - p.usageDays * DAY_MS).toISOString().slice(0, 10);
      const counts = this.usage.countOlder(tier, beforeDay);
      return { tier, days: p.usageDays, before_day: beforeDay, events: counts.events, daily_totals: counts.daily };
    });
    const createdBefore = new Date(now - this.policy.modelVersionsDays * DAY_MS).toISOString();
    const versions = this.models.expiredVersions(createdBefore);
    return {
      dry_run: true,
      at: new Date(now).toISOString(),
      conversations: { count: this.conversations.countExpired(now), days_by_tier: Object.fromEntries(Object.entries(this.policy.tiers).map(([t, p]) => [t, p.conversationDays])) },
      usage,
      model_versions: { days: this.policy.modelVersionsDays, created_before: createdBefore, count: versions.length, items: versions },
    };
  }

  /** Removes what plan() lists; each kind in its own transactions, each audited. Idempotent. */
  async apply(actor: Actor, now = Date.now()): Promise<RetentionReport> {
    const plan = this.plan(now);
    for (const u of plan.usage) {
      if (u.events + u.daily_totals === 0) continue;
      await this.writer.write(actor, (tx) => {
        this.usage.prune(tx, u.tier, u.before_day);
        tx.audit('retention.usage', `tier:${u.tier}`, { before_day: u.before_day, events: u.events, daily_totals: u.daily_totals });
      });
    }
    for (let i = 0; i < plan.model_versions.items.length; i += 100) {
      const batch = plan.model_versions.items.slice(i, i + 100);
      await this.writer.write(actor, (tx) => {
        for (const v of batch) {
          this.models.deleteVersion(tx, v.model, v.version);
          tx.audit('retention.model_version', `model:${v.model}/${v.version}`, { created_at: v.created_at });
        }
      });
    }
    const archived = await this.conversations.run(actor, now);
    return { ...plan, dry_run: false, conversations: { ...plan.conversations, count: archived.deleted } };
  }
}
