import { parentPort, workerData } from 'node:worker_threads';
import { openDatabase } from '../engines/sql/database.js';

// One snapshot, copied by a connection of its own on this thread: VACUUM INTO a 1 GiB
// database takes seconds, and on the daemon's connection it held the event loop all that
// time (append p99 went from 19 ms to 2.7 s while a backup ran; bench/large-state.ts). A
// reader in WAL mode sees one consistent state for the whole copy and blocks no writer.

const { source, target } = workerData as { source: string; target: string };
try {
  const db = await openDatabase(source, { readonly: true });
  try {
    // The copy is scratch until the archive has stored (and flushed) it: no sync of its own,
    // which would flush it all at once, stalling the daemon's commits behind it.
    db.exec('PRAGMA synchronous = OFF');
    db.prepare('VACUUM INTO ?').run(target);
  } finally {
    db.close();
  }
  // The LSN comes from the copy itself, so it cannot disagree with what the copy holds.
  const copy = await openDatabase(target, { readonly: true });
  try {
    const lsn = copy.prepare<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'").get()?.seq ?? 0;
    parentPort!.postMessage({ lsn });
  } finally {
    copy.close();
  }
} catch (err) {
  // The code travels too: SQLITE_FULL must reach the caller as a full disk, not as a 500.
  parentPort!.postMessage({ error: (err as Error).message, code: (err as { code?: string }).code });
}
