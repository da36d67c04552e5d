import type { ChangeRecord } from '../engines/sql/change-log.js';
import type { SqlStore } from '../engines/sql/sql-store.js';

// Reading the change log on one node and applying it on another. This is the seam that
// log shipping (replicas) and point-in-time restore build on: whatever the transport, records
// arrive in LSN order and are replayed through the same appliers the primary ran, so the
// receiving store ends up with the same rows and the same change log.

export class ChangeFeedGap extends Error {
  constructor(expectedAfter: number, got: number) {
    super(`change feed gap: expected a record after LSN ${expectedAfter}, got ${got}`);
    this.name = 'ChangeFeedGap';
  }
}

/** Records after `afterLsn`, oldest first, at most `limit`. */
export function readChanges(source: SqlStore, afterLsn: number, limit = 1000): ChangeRecord[] {
  return source.changes.readAfter(afterLsn, limit);
}

/**
 * Applies records in one transaction. They must continue the target's log: the first LSN is
 * greater than the target's last one and LSNs increase. Records the target already holds
 * (LSN ≤ its last) are skipped, so re-sending a batch after a lost acknowledgement is safe.
 * Returns the target's last LSN afterwards.
 */
export function applyChanges(target: SqlStore, records: readonly ChangeRecord[]): number {
  let last = target.changes.lastLsn();
  const fresh = records.filter((r) => r.lsn > last);
  if (fresh.length === 0) return last;
  target.db.exec('BEGIN IMMEDIATE');
  try {
    for (const r of fresh) {
      // LSNs are gapless (AUTOINCREMENT inside the committing transaction), so anything but
      // last + 1 means records were lost on the way.
      if (r.lsn !== last + 1) throw new ChangeFeedGap(last, r.lsn);
      target.changes.replay(r);
      last = r.lsn;
    }
    target.db.exec('COMMIT');
  } catch (err) {
    target.db.exec('ROLLBACK');
    throw err;
  }
  return last;
}
