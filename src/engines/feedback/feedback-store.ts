import { randomUUID } from 'node:crypto';
import { ByteWriter, parquetWrite } from 'hyparquet-writer';
import type { FieldCipher } from '../crypto/field-cipher.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';

// Human feedback for preference training: comparisons (a prompt, 2+ responses, the chosen one)
// and ratings (a prompt, a response, a score 1..10). The texts are sealed like messages: with
// the key of the user they came from when `user_id` is given (erasing the user deletes them),
// else with the key of the pseudo-owner "~feedback". Exports stream; comparisons leave as the
// pairs preference-training code expects: one {prompt, chosen, rejected} per rejected response.

export const feedbackMigrations: Migration[] = [
  {
    engine: 'feedback',
    version: 1,
    name: 'comparisons and ratings',
    sql: `
      CREATE TABLE feedback_comparisons (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        prompt TEXT NOT NULL,
        responses TEXT NOT NULL,
        chosen INTEGER NOT NULL,
        annotator TEXT,
        tags TEXT NOT NULL,
        user_id TEXT,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX feedback_comparisons_user ON feedback_comparisons (user_id);
      CREATE TABLE feedback_ratings (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        prompt TEXT NOT NULL,
        response TEXT NOT NULL,
        score INTEGER NOT NULL,
        annotator TEXT,
        tags TEXT NOT NULL,
        user_id TEXT,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX feedback_ratings_user ON feedback_ratings (user_id);
    `,
  },
];

const UNOWNED = '~feedback';

export interface NewComparison {
  prompt: string;
  responses: string[];
  chosen: number;
  annotator?: string | undefined;
  tags?: string[] | undefined;
  user_id?: string | undefined;
}

export interface NewRating {
  prompt: string;
  response: string;
  score: number;
  annotator?: string | undefined;
  tags?: string[] | undefined;
  user_id?: string | undefined;
}

type ComparisonRow = { seq: number; id: string; prompt: string; responses: string; chosen: number; annotator: string | null; tags: string; user_id: string | null; created_at: string };
type RatingRow = { seq: number; id: string; prompt: string; response: string; score: number; annotator: string | null; tags: string; user_id: string | null; created_at: string };

export type PreferencePair = { id: string; prompt: string; chosen: string; rejected: string; annotator: string | null; tags: string[]; created_at: string };
export type RatingOut = { id: string; prompt: string; response: string; score: number; annotator: string | null; tags: string[]; created_at: string };

export class FeedbackStore {
  private readonly compared: ChangeType<Omit<ComparisonRow, 'seq'>>;
  private readonly rated: ChangeType<Omit<RatingRow, 'seq'>>;
  private readonly userErased: ChangeType<{ user_id: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    private readonly cipher: FieldCipher,
    /**
     * Throws NotFound unless the user exists. Asked inside the write, so that a record cannot
     * attach to a user an erasure removed meanwhile, nor to an id created later by someone else.
     */
    private readonly requireUser: (userId: string) => void = () => undefined,
  ) {
    this.compared = changes.define('feedback', 'compare', (d, c) => {
      d.prepare('INSERT INTO feedback_comparisons (id, prompt, responses, chosen, annotator, tags, user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
        c.id, c.prompt, c.responses, c.chosen, c.annotator, c.tags, c.user_id, c.created_at,
      );
    });
    this.rated = changes.define('feedback', 'rate', (d, r) => {
      d.prepare('INSERT INTO feedback_ratings (id, prompt, response, score, annotator, tags, user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
        r.id, r.prompt, r.response, r.score, r.annotator, r.tags, r.user_id, r.created_at,
      );
    });
    this.userErased = changes.define('feedback', 'erase_user', (d, p) => {
      d.prepare('DELETE FROM feedback_comparisons WHERE user_id = ?').run(p.user_id);
      d.prepare('DELETE FROM feedback_ratings WHERE user_id = ?').run(p.user_id);
    });
  }

  addComparison(actor: Actor, c: NewComparison) {
    return this.writer.write(actor, (tx) => {
      if (c.user_id !== undefined) this.requireUser(c.user_id);
      const owner = c.user_id ?? UNOWNED;
      const row = {
        id: randomUUID(),
        prompt: this.cipher.seal(tx, owner, c.prompt),
        responses: this.cipher.seal(tx, owner, JSON.stringify(c.responses)),
        chosen: c.chosen,
        annotator: c.annotator ?? null,
        tags: JSON.stringify(c.tags ?? []),
        user_id: c.user_id ?? null,
        created_at: new Date().toISOString(),
      };
      tx.apply(this.compared, row);
      return { id: row.id, prompt: c.prompt, responses: c.responses, chosen: c.chosen, annotator: row.annotator, tags: c.tags ?? [], user_id: row.user_id, created_at: row.created_at };
    });
  }

  addRating(actor: Actor, r: NewRating) {
    return this.writer.write(actor, (tx) => {
      if (r.user_id !== undefined) this.requireUser(r.user_id);
      const owner = r.user_id ?? UNOWNED;
      const row = {
        id: randomUUID(),
        prompt: this.cipher.seal(tx, owner, r.prompt),
        response: this.cipher.seal(tx, owner, r.response),
        score: r.score,
        annotator: r.annotator ?? null,
        tags: JSON.stringify(r.tags ?? []),
        user_id: r.user_id ?? null,
        created_at: new Date().toISOString(),
      };
      tx.apply(this.rated, row);
      return { id: row.id, prompt: r.prompt, response: r.response, score: r.score, annotator: row.annotator, tags: r.tags ?? [], user_id: row.user_id, created_at: row.created_at };
    });
  }

  /** Inside an erasure: the user's comparisons and ratings. */
  eraseUser(tx: Tx, userId: string): void {
    tx.apply(this.userErased, { user_id: userId });
  }

  /** Preference pairs in insertion order, read in pages (constant memory). */
  async *pairs(userId?: string): AsyncIterable<PreferencePair> {
    for await (const c of this.pages<ComparisonRow>('feedback_comparisons', userId)) {
      const owner = c.user_id ?? UNOWNED;
      const prompt = this.cipher.open(owner, c.prompt) ?? '';
      const responses = JSON.parse(this.cipher.open(owner, c.responses) ?? '[]') as string[];
      for (let j = 0; j < responses.length; j++) {
        if (j === c.chosen) continue;
        yield { id: c.id, prompt, chosen: responses[c.chosen]!, rejected: responses[j]!, annotator: c.annotator, tags: JSON.parse(c.tags) as string[], created_at: c.created_at };
      }
    }
  }

  async *ratings(userId?: string): AsyncIterable<RatingOut> {
    for await (const r of this.pages<RatingRow>('feedback_ratings', userId)) {
      const owner = r.user_id ?? UNOWNED;
      yield { id: r.id, prompt: this.cipher.open(owner, r.prompt) ?? '', response: this.cipher.open(owner, r.response) ?? '', score: r.score, annotator: r.annotator, tags: JSON.parse(r.tags) as string[], created_at: r.created_at };
    }
  }

  /** One Parquet file of an export (built in memory: exports are bounded by `maxRows`). */
  async parquet(kind: 'comparisons' | 'ratings', maxRows = 1_000_000): Promise<Uint8Array> {
    const rows: Array<PreferencePair | RatingOut> = [];
    for await (const r of kind === 'comparisons' ? this.pairs() : this.ratings()) {
      rows.push(r);
      if (rows.length > maxRows) throw new Error(`more than ${maxRows} rows: export as JSONL instead`);
    }
    const col = <T>(name: string, f: (r: T) => unknown) => ({ name, data: (rows as T[]).map(f) });
    const text = (name: string) => ({ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' });
    const common = [{ name: 'annotator', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' }, { name: 'tags', type: 'BYTE_ARRAY', converted_type: 'JSON', repetition_type: 'REQUIRED' }, text('created_at')];
    const writer = new ByteWriter();
    if (kind === 'comparisons') {
      parquetWrite({
        writer,
        columnData: [col<PreferencePair>('id', (r) => r.id), col<PreferencePair>('prompt', (r) => r.prompt), col<PreferencePair>('chosen', (r) => r.chosen), col<PreferencePair>('rejected', (r) => r.rejected), col<PreferencePair>('annotator', (r) => r.annotator), col<PreferencePair>('tags', (r) => r.tags), col<PreferencePair>('created_at', (r) => r.created_at)],
        schema: [{ name: 'root', num_children: 7 }, text('id'), text('prompt'), text('chosen'), text('rejected'), ...common] as Parameters<typeof parquetWrite>[0]['schema'],
      });
    } else {
      parquetWrite({
        writer,
        columnData: [col<RatingOut>('id', (r) => r.id), col<RatingOut>('prompt', (r) => r.prompt), col<RatingOut>('response', (r) => r.response), col<RatingOut>('score', (r) => r.score), col<RatingOut>('annotator', (r) => r.annotator), col<RatingOut>('tags', (r) => r.tags), col<RatingOut>('created_at', (r) => r.created_at)],
        schema: [{ name: 'root', num_children: 7 }, text('id'), text('prompt'), text('response'), { name: 'score', type: 'INT32', repetition_type: 'REQUIRED' }, ...common] as Parameters<typeof parquetWrite>[0]['schema'],
      });
    }
    return new Uint8Array(writer.getBuffer());
  }

  private async *pages<Row extends { seq: number }>(table: string, userId?: string): AsyncIterable<Row> {
    let after = 0;
    for (;;) {
      const rows = this.db
        .prepare<Row>(`SELECT * FROM ${table} WHERE seq > ? ${userId ? 'AND user_id = ?' : ''} ORDER BY seq LIMIT 500`)
        .all(...(userId ? [after, userId] : [after]));
      if (rows.length === 0) return;
      for (const r of rows) yield r;
      after = rows[rows.length - 1]!.seq;
    }
  }
}
