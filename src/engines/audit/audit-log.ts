import { createHash } from 'node:crypto';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { AuditEntryInput, Tx } from '../sql/writer.js';

// Append-only, hash-chained record of every mutation and every admin or privacy act.
// Each entry's hash covers the previous entry's hash and every field of its own, so editing,
// deleting or reordering a row in the database file breaks the chain from that row on, and
// verify() names the first entry where it breaks. Entries are written by the Writer in the
// same transaction as the change they describe, so an entry exists exactly when its change
// committed. Nothing updates or deletes rows of this table.

export const auditMigrations: Migration[] = [
  {
    engine: 'audit',
    version: 1,
    name: 'audit log',
    sql: `
      CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        token_id TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
      ) STRICT;
    `,
  },
];

export interface AuditEntry {
  seq: number;
  time: string;
  token_id: string;
  action: string;
  target: string;
  detail: Record<string, unknown> | null;
  prev_hash: string;
  hash: string;
}

export interface AuditVerdict {
  ok: boolean;
  entries: number;
  head_hash: string;
  first_broken?: { seq: number; reason: string };
}

type AuditRow = Omit<AuditEntry, 'detail'> & { detail: string | null };

const GENESIS = '0'.repeat(64);

function entryHash(prevHash: string, e: Omit<AuditRow, 'hash' | 'prev_hash'>): string {
  return createHash('sha256')
    .update(prevHash)
    .update('\n')
    .update(JSON.stringify([e.seq, e.time, e.token_id, e.action, e.target, e.detail]))
    .digest('hex');
}

export class AuditLog {
  private readonly appended: ChangeType<AuditRow>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
  ) {
    this.appended = changes.define<AuditRow>(
      'audit',
      'append',
      (db, r) => {
        db.prepare(
          'INSERT INTO audit_log (seq, time, token_id, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        ).run(r.seq, r.time, r.token_id, r.action, r.target, r.detail, r.prev_hash, r.hash);
      },
      { audited: false },
    );
  }

  /** The Writer's auditor: appends entries for one write call inside its transaction. */
  readonly append = (tx: Tx, entries: AuditEntryInput[]): void => {
    const head = this.db.prepare<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1').get();
    let seq = head?.seq ?? 0;
    let prev = head?.hash ?? GENESIS;
    const time = new Date().toISOString();
    for (const e of entries) {
      seq++;
      const fields = {
        seq,
        time,
        token_id: tx.actor.tokenId,
        action: e.action,
        target: e.target,
        detail: e.detail ? JSON.stringify(e.detail) : null,
      };
      const hash = entryHash(prev, fields);
      tx.apply(this.appended, { ...fields, prev_hash: prev, hash });
      prev = hash;
    }
  };

  /** Newest first; `beforeSeq` is the cursor from the previous page. */
  list(limit: number, beforeSeq?: number): AuditEntry[] {
    return this.db
      .prepare<AuditRow>('SELECT * FROM audit_log WHERE seq < ? ORDER BY seq DESC LIMIT ?')
      .all(beforeSeq ?? Number.MAX_SAFE_INTEGER, limit)
      .map((r) => ({ ...r, detail: r.detail === null ? null : (JSON.parse(r.detail) as Record<string, unknown>) }));
  }

  verify(): AuditVerdict {
    let prev = GENESIS;
    let expectedSeq = 1;
    let entries = 0;
    // Walk in pages so a long log is never loaded whole.
    for (;;) {
      const rows = this.db
        .prepare<AuditRow>('SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT 1000')
        .all(expectedSeq);
      if (rows.length === 0) break;
      for (const r of rows) {
        const broken = (reason: string): AuditVerdict => ({
          ok: false,
          entries,
          head_hash: prev,
          first_broken: { seq: expectedSeq, reason },
        });
        if (r.seq !== expectedSeq) return broken(`entry ${expectedSeq} is missing`);
        if (r.prev_hash !== prev) return broken('prev_hash does not match the hash of the entry before it');
        if (entryHash(prev, r) !== r.hash) return broken('the entry was altered: its hash does not match its fields');
        prev = r.hash;
        expectedSeq++;
        entries++;
      }
    }
    return { ok: true, entries, head_hash: prev };
  }
}
