import { createHash } from 'node:crypto';
import { InvalidInput, NotFound } from '../errors.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Writer } from '../sql/writer.js';
import type { ModelChanges } from './model-changes.js';
import type { RolloutVariant } from './model-schema.js';

// Weighted rollouts: a model's traffic split between versions, resolved per caller key.

export class ModelRollouts {
  constructor(
    private readonly db: SqlDatabase,
    private readonly writer: Writer,
    private readonly changes: ModelChanges,
    /** Throws NotFound when the model does not exist. */
    private readonly requireModel: (model: string) => void,
  ) {}

  set(actor: Actor, model: string, variants: RolloutVariant[]) {
    const total = variants.reduce((s, v) => s + v.weight, 0);
    if (total !== 100) throw new InvalidInput(`rollout weights must sum to 100, not ${total}`);
    return this.writer.write(actor, (tx) => {
      this.requireModel(model);
      const version = this.db.prepare('SELECT 1 FROM model_versions WHERE model = ? AND version = ?');
      for (const v of variants) if (!version.get(model, v.version)) throw new InvalidInput(`model ${model} has no version ${v.version}`);
      tx.apply(this.changes.rolloutSet, { model, variants: JSON.stringify(variants), now: new Date().toISOString() });
      tx.audit('models.set_rollout', `model:${model}`, { variants });
      return { model, variants };
    });
  }

  get(model: string): RolloutVariant[] | null {
    const row = this.db.prepare<{ variants: string }>('SELECT variants FROM model_rollouts WHERE model = ?').get(model);
    return row ? (JSON.parse(row.variants) as RolloutVariant[]) : null;
  }

  /**
   * Sticky resolution: the key's SHA-256 picks a point in 0..99 and the variants divide that
   * range in their listed order, so a key keeps its version while the rollout is unchanged.
   */
  resolve(model: string, key: string): { version: string } {
    const variants = this.get(model);
    if (!variants) throw new NotFound(`model ${model} has no rollout`);
    const point = createHash('sha256').update(`${model}\0${key}`).digest().readUInt32BE(0) % 100;
    let edge = 0;
    for (const v of variants) {
      edge += v.weight;
      if (point < edge) return { version: v.version };
    }
    return { version: variants[variants.length - 1]!.version };
  }
}
