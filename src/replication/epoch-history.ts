import type { SqlStore } from '../engines/sql/sql-store.js';

// Where each epoch's log forked from the one before it (PostgreSQL's timeline history).
// Every store keeps, in meta `epoch_history`, the pairs [epoch, last LSN of the epoch before]:
// a node promoted to epoch e at LSN x appends [e, x]. It is data lineage, not node state, so a
// snapshot carries its source's and a replica adopts its primary's from every feed frame.
//
// Why: a replica that follows a new primary could hold records the new primary never had — the
// old primary's last writes, which reached this replica but not the one that won. 0.9.0 caught
// that only while the replica was *ahead* of the new primary (409); once the new primary had
// written past it, the replica pulled from its own last LSN on and silently kept a different
// history below it (the partition test found it). With the history, the primary sees that a
// replica of epoch E asking after LSN n > fork(E) has a tail nobody else has, and refuses it:
// the replica bootstraps and its tail goes to a rollback file.

export type EpochHistory = Array<[epoch: number, forkLsn: number]>;

const KEY = 'epoch_history';
/** Failovers are rare; the oldest entries only matter to replicas down for that long. */
const KEEP = 256;

export function readHistory(store: SqlStore): EpochHistory {
  try {
    const parsed = JSON.parse(store.meta(KEY) ?? '[]') as unknown;
    return Array.isArray(parsed) ? (parsed.filter((e) => Array.isArray(e) && Number.isInteger(e[0]) && Number.isInteger(e[1])) as EpochHistory) : [];
  } catch {
    return [];
  }
}

/** Written by the node that becomes primary of `epoch`, with its last LSN at that moment. */
export function appendHistory(store: SqlStore, epoch: number, forkLsn: number): void {
  const next = [...readHistory(store).filter(([e]) => e < epoch), [epoch, forkLsn] as [number, number]].slice(-KEEP);
  writeHistory(store, next);
}

/** A replica takes its primary's history (sent in every frame) when it differs from its own. */
export function adoptHistory(store: SqlStore, history: EpochHistory | undefined): void {
  if (!history || history.length === 0) return;
  if (JSON.stringify(history) === (store.meta(KEY) ?? '[]')) return;
  writeHistory(store, history);
}

/**
 * The last LSN a node whose data is of epoch `epoch` shares with this history: the fork point
 * of the first later epoch, or undefined when no later epoch is recorded (nothing to compare).
 */
export function sharedUpTo(history: EpochHistory, epoch: number): number | undefined {
  let fork: number | undefined;
  for (const [e, lsn] of history) if (e > epoch) fork = fork === undefined ? lsn : Math.min(fork, lsn);
  return fork;
}

function writeHistory(store: SqlStore, history: EpochHistory): void {
  // Node-written meta, like the epoch: outside the change log (it is not a change of data).
  store.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(KEY, JSON.stringify(history));
}
