import type { JobContext } from '../engines/jobs/job-runner.js';
import type { Actor } from '../engines/sql/writer.js';
import type { StrataNode } from './strata-node.js';

const SYSTEM: Actor = { tokenId: 'system' };

// The erasure workflow (GDPR art. 17), run as a job: the user's vectors, then one write that
// removes their rows and destroys their key (so what is left of their content elsewhere —
// archives, backups, free pages — can no longer be read), then caches and archive objects.
// Every step is idempotent, so a job cut short by a restart is simply run again. Billing
// entries are kept: the ledger is append-only by law and holds no content.

type ErasureNode = Pick<StrataNode, 'vectors' | 'sql' | 'conversations' | 'usage' | 'tokens' | 'feedback' | 'users' | 'keyring' | 'conversationArchive'>;

export async function eraseUser(node: ErasureNode, jobId: string, userId: string, ctx: JobContext): Promise<Record<string, unknown>> {
  ctx.progress(0.05);
  let vectors = 0;
  for (const c of node.vectors.list()) vectors += (await node.vectors.delete(SYSTEM, c.name, { filter: { user_id: userId } })).deleted;
  ctx.progress(0.4);
  const done = await node.sql.writer.write(SYSTEM, (tx) => {
    const conv = node.conversations.eraseUser(tx, userId);
    node.usage.eraseUser(tx, userId);
    const tokens = node.tokens.eraseUser(tx, userId);
    node.feedback.eraseUser(tx, userId);
    node.users.erase(tx, userId);
    node.keyring.destroyUserKey(tx, userId);
    tx.audit('users.erase_done', `user:${userId}`, { job_id: jobId, conversations: conv.conversationIds.length, segments: conv.segmentKeys.length, tokens, vectors });
    return { ...conv, tokens };
  });
  ctx.progress(0.7);
  await node.users.forget(userId);
  for (const id of done.conversationIds) await node.conversations.forget(id);
  for (const key of done.segmentKeys) await node.conversationArchive.deleteObject(key);
  // The rows that named these keys are gone with the commit above, so a job resumed after a
  // crash here would find none: everything under the user's prefix goes as well.
  const leftovers = await node.conversationArchive.objectsOfUser(userId);
  for (const key of leftovers) await node.conversationArchive.deleteObject(key);
  // The WAL still holds the pages as they were; truncating it leaves the key nowhere on disk.
  node.sql.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  return { conversations: done.conversationIds.length, archive_objects: done.segmentKeys.length + leftovers.length, tokens: done.tokens, vectors, key_destroyed: node.keyring.enabled };
}
