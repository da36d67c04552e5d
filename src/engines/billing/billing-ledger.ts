import { createHash } from 'node:crypto';
import { Conflict } from '../errors.js';
import type { ChangeType } from '../sql/change-log.js';
import type { Migration } from '../sql/migrations.js';
import type { SqlStore } from '../sql/sql-store.js';
import type { Actor } from '../sql/writer.js';

// The billing ledger: money, so it lives in its own SQLite file (billing.db) with its own
// change log and writer — it can be backed up, replicated synchronously and audited apart
// from everything else. It is append-only three times over: this class has no update or
// delete path, triggers refuse UPDATE and DELETE in SQL, and every entry carries the SHA-256
// of its own fields and the previous entry's hash, so an edit made behind SQLite's back
// (a hex editor, a dropped trigger) breaks the chain at that entry. Corrections are new
// entries (kind `adjustment` or `refund`), never edits.
//
// The free-text description is personal data (a card's last digits, an address), kept
// forever by an append-only ledger. With encryption on it is stored sealed with the user's
// key: erasing the user destroys the key, and the description reads as null from then on,
// while amounts, refs and the hash chain stay verifiable — the hash covers the sealed form,
// so verify() never needs a key.

export const billingMigrations: Migration[] = [
  {
    engine: 'billing',
    version: 1,
    name: 'hash-chained ledger',
    sql: `
      CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        amount_micros INTEGER NOT NULL,
        currency TEXT NOT NULL,
        ref TEXT NOT NULL UNIQUE,
        description TEXT,
        created_at TEXT NOT NULL,
        actor TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
      ) STRICT;
      CREATE INDEX ledger_by_user ON ledger (user_id, seq);
      CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the billing ledger is append-only'); END;
      CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the billing ledger is append-only'); END;
    `,
  },
];

export const ENTRY_KINDS = ['charge', 'payment', 'credit', 'refund', 'adjustment'] as const;
export type EntryKind = (typeof ENTRY_KINDS)[number];

export interface LedgerEntry {
  seq: number;
  user_id: string;
  kind: EntryKind;
  amount_micros: number;
  currency: string;
  ref: string;
  description: string | null;
  created_at: string;
  actor: string;
  prev_hash: string;
  hash: string;
}

export interface NewEntry {
  user_id: string;
  kind: EntryKind;
  amount_micros: number;
  currency: string;
  ref: string;
  description?: string | undefined;
}

const GENESIS = '0'.repeat(64);

export interface DescriptionCipher {
  seal(userId: string, text: string): string;
  /** undefined when the user's key is gone (erased). */
  open(userId: string, stored: string): string | undefined;
}

/** The hash covers every field but itself, in a fixed order, so no field can change unseen. */
export function entryHash(e: Omit<LedgerEntry, 'hash'>): string {
  const fields = [e.seq, e.user_id, e.kind, e.amount_micros, e.currency, e.ref, e.description ?? '', e.created_at, e.actor, e.prev_hash];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

export class BillingLedger {
  private readonly appended: ChangeType<LedgerEntry>;

  constructor(
    private readonly store: SqlStore,
    private readonly events: { appended?(): void } = {},
    /** Seals and opens descriptions with the user's key (identity when encryption is off). */
    private readonly cipher: DescriptionCipher = { seal: (_u, text) => text, open: (_u, stored) => stored },
  ) {
    this.appended = store.changes.define<LedgerEntry>('billing', 'append', (db, e) => {
      db.prepare(
        `INSERT INTO ledger (seq, user_id, kind, amount_micros, currency, ref, description, created_at, actor, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(e.seq, e.user_id, e.kind, e.amount_micros, e.currency, e.ref, e.description, e.created_at, e.actor, e.prev_hash, e.hash);
    });
  }

  /**
   * Appends an entry, or returns the entry already recorded under the same ref (a retried
   * request). The same ref with different fields is a conflict, not a silent success.
   */
  async append(actor: Actor, input: NewEntry): Promise<{ entry: LedgerEntry; created: boolean }> {
    const result = await this.store.writer.write(actor, (tx) => {
      const existing = this.byRef(input.ref);
      if (existing) {
        const same =
          existing.user_id === input.user_id &&
          existing.kind === input.kind &&
          existing.amount_micros === input.amount_micros &&
          existing.currency === input.currency;
        if (!same) throw new Conflict(`ref ${input.ref} already names a different ledger entry (seq ${existing.seq})`);
        return { entry: this.opened(existing), created: false };
      }
      const head = this.head();
      const base = {
        seq: (head?.seq ?? 0) + 1,
        user_id: input.user_id,
        kind: input.kind,
        amount_micros: input.amount_micros,
        currency: input.currency,
        ref: input.ref,
        description: input.description === undefined ? null : this.cipher.seal(input.user_id, input.description),
        created_at: new Date().toISOString(),
        actor: actor.tokenId,
        prev_hash: head?.hash ?? GENESIS,
      };
      const entry: LedgerEntry = { ...base, hash: entryHash(base) };
      tx.apply(this.appended, entry);
      return { entry: this.opened(entry), created: true };
    });
    if (result.created) this.events.appended?.();
    return result;
  }

  list(query: { userId?: string | undefined; limit: number; afterSeq?: number | undefined }): LedgerEntry[] {
    const after = query.afterSeq ?? 0;
    const rows =
      query.userId !== undefined
        ? this.store.db.prepare<LedgerEntry>('SELECT * FROM ledger WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(query.userId, after, query.limit)
        : this.store.db.prepare<LedgerEntry>('SELECT * FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?').all(after, query.limit);
    return rows.map((e) => this.opened(e));
  }

  /** The entry as clients see it: the description in clear, or null once its key is destroyed. */
  private opened(e: LedgerEntry): LedgerEntry {
    return e.description === null ? e : { ...e, description: this.cipher.open(e.user_id, e.description) ?? null };
  }

  count(): number {
    return this.store.db.prepare<{ n: number }>('SELECT COUNT(*) AS n FROM ledger').get()!.n;
  }

  /** Walks the whole chain; names the first entry whose hash, link or sequence is wrong. */
  verify(): { ok: boolean; entries: number; head_hash: string; first_broken?: { seq: number; reason: string } } {
    let prev = GENESIS;
    let expectedSeq = 1;
    let entries = 0;
    const pageOf = this.store.db.prepare<LedgerEntry>('SELECT * FROM ledger WHERE seq > ? ORDER BY seq LIMIT 1000');
    // Paged by rowid (seq) so a long ledger is walked in bounded memory.
    for (let rows = pageOf.all(0); rows.length > 0; rows = pageOf.all(rows[rows.length - 1]!.seq))
    for (const e of rows) {
      const reason =
        e.seq !== expectedSeq ? `entry ${expectedSeq} is missing` : e.prev_hash !== prev ? 'prev_hash does not match the entry before it' : entryHash(e) !== e.hash ? 'its content does not match its hash' : null;
      if (reason) return { ok: false, entries, head_hash: prev, first_broken: { seq: e.seq !== expectedSeq ? expectedSeq : e.seq, reason } };
      prev = e.hash;
      expectedSeq++;
      entries++;
    }
    return { ok: true, entries, head_hash: prev };
  }

  private head(): LedgerEntry | undefined {
    return this.store.db.prepare<LedgerEntry>('SELECT * FROM ledger ORDER BY seq DESC LIMIT 1').get();
  }

  private byRef(ref: string): LedgerEntry | undefined {
    return this.store.db.prepare<LedgerEntry>('SELECT * FROM ledger WHERE ref = ? ').get(ref);
  }
}
