import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Packr } from 'msgpackr';
import { z } from 'zod';
import { Conflict, InsufficientStorage, isOutOfSpace, LogPruned, NotFound, Unavailable } from '../../engines/errors.js';
import type { SqlStore } from '../../engines/sql/sql-store.js';
import { readHistory, sharedUpTo } from '../../replication/epoch-history.js';
import { listRollbacks } from '../../replication/rollback.js';
import { takeSnapshotOffThread } from '../../replication/snapshot.js';
import type { ApiRouter } from '../api-router.js';
import { actorOf } from '../auth.js';
import type { StrataNode } from '../strata-node.js';

/** Snapshots served to replicas are taken one after another (see the snapshot route). */
let snapshotTurn: Promise<void> = Promise.resolve();

// The primary's side of log shipping, and promotion. Replicas authenticate with a service or
// admin token of the primary.

const packr = new Packr({ useRecords: false, variableMapSize: true });
const store = z.enum(['main', 'billing']);
/** Who asks, on the feed and the snapshot: kept so that this node, restarted, can ask it for its epoch. */
const replicaFields = {
  node_id: z.string().min(1).max(128).optional(),
  /** Where the replica listens. */
  url: z.string().url().max(2048).optional(),
};

/**
 * Only a primary serves its log. A fenced node keeps its epoch-e tail until it bootstraps, and
 * a replica chained behind it would have taken that tail, labelled with the new epoch, where
 * no fork check could see it (epoch-history.ts).
 */
function servingPrimary(node: StrataNode): void {
  const state = node.replication.state();
  if (state.role !== 'primary') throw new Unavailable(`this node is a replica${state.primary_url ? ` of ${state.primary_url}` : ''}; follow the primary`);
}

export function replicationRoutes(router: ApiRouter, node: StrataNode): void {
  const stores: Record<'main' | 'billing', SqlStore> = { main: node.sql, billing: node.billingSql };

  router.route(
    {
      method: 'get',
      path: '/v1/replication/changes',
      summary: 'Change-log records after an LSN, as MessagePack {epoch, primary_lsn, records}; long-polls up to wait_ms',
      tag: 'replication',
      access: 'service',
      query: z.object({
        store: store.default('main'),
        after: z.coerce.number().int().min(0),
        /** The epoch of the caller's data (replicas since 0.10 send it): finds a divergent tail below `after`. */
        epoch: z.coerce.number().int().min(1).optional(),
        limit: z.coerce.number().int().min(1).max(5000).default(1000),
        wait_ms: z.coerce.number().int().min(0).max(30_000).default(0),
        ...replicaFields,
      }),
      responses: { 200: { description: 'a frame' }, 409: { description: 'the caller is ahead of this node' }, 410: { description: 'log_pruned: bootstrap from a snapshot' } },
    },
    async (c, { query }) => {
      const s = stores[query.store];
      servingPrimary(node);
      const epoch = node.replication.epoch();
      if (query.epoch !== undefined && query.epoch > epoch) throw new Unavailable(`this node is at epoch ${epoch}, older than the caller's ${query.epoch}: it was replaced`);
      if (query.after > s.writer.lastLsn) throw new Conflict(`the caller is at LSN ${query.after}, past this node's ${s.writer.lastLsn}: a divergent tail; bootstrap`);
      const shared = query.epoch !== undefined && query.epoch < epoch ? sharedUpTo(readHistory(s), query.epoch) : undefined;
      if (shared !== undefined && query.after > shared) {
        throw new Conflict(`the caller's log of epoch ${query.epoch} runs to LSN ${query.after}, but this node's history left that epoch at LSN ${shared}: a divergent tail; bootstrap`);
      }
      // Remembered and counted toward synchronous writes only now: a refused caller is no
      // replica of this node, and a divergent one's LSN says nothing about what it holds.
      if (query.node_id) {
        node.replication.rememberReplica(query.node_id, query.url);
        node.replication.tracker.report(query.node_id, query.store, query.after);
      }
      const oldest = s.changes.oldestLsn();
      if (query.after < s.writer.lastLsn && oldest > query.after + 1) throw new LogPruned(query.after, oldest);
      let records = s.changes.readAfter(query.after, query.limit);
      if (records.length === 0 && query.wait_ms > 0) {
        // Wait for the next commit, the deadline, or shutdown (a draining node must not hold
        // long-polls open until its shutdown timeout).
        await new Promise<void>((resolve) => {
          const deadline = Date.now() + query.wait_ms;
          let done = false;
          const finish = () => {
            if (done) return;
            done = true;
            clearInterval(tick);
            resolve();
          };
          const tick = setInterval(() => (node.draining || Date.now() >= deadline) && finish(), 100);
          s.writer.onCommittedOnce(finish);
        });
        servingPrimary(node); // fenced while it waited?
        records = s.changes.readAfter(query.after, query.limit);
      }
      return c.body(new Uint8Array(packr.pack({ epoch: node.replication.epoch(), primary_lsn: s.writer.lastLsn, records, history: readHistory(s) })), 200, { 'Content-Type': 'application/msgpack' });
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/replication/snapshot',
      summary: 'A consistent copy of a store (SQLite file), tagged with its LSN in X-Strata-Lsn',
      tag: 'replication',
      access: 'service',
      query: z.object({ store: store.default('main'), ...replicaFields }),
      responses: { 200: { description: 'the database file' } },
    },
    async (c, { query }) => {
      // Remembered here, not only on the first change-feed request: a replica is caught up as
      // soon as its snapshot is installed, and a primary killed before that first request
      // used to restart without asking it for its epoch (and accepted writes a promoted
      // replica had already superseded). Found as a flaky test under CI load.
      servingPrimary(node);
      if (query.node_id) node.replication.rememberReplica(query.node_id, query.url);
      // One snapshot at a time per node: each is a full copy of the store on the data dir's
      // disk, and ten at once took ten times the database's size (review).
      const turn = snapshotTurn;
      let done!: () => void;
      snapshotTurn = new Promise<void>((r) => (done = r));
      await turn;
      let dir: string | undefined;
      let snap: { path: string; lsn: number };
      try {
        dir = await mkdtemp(join(node.dataDir, '.snapshot-'));
        snap = await takeSnapshotOffThread(stores[query.store], join(dir, 'snapshot.db'));
      } catch (err) {
        // A failed copy goes at once: on a full disk its bytes are what the next write needs.
        if (dir) await rm(dir, { recursive: true, force: true });
        if (isOutOfSpace(err)) throw new InsufficientStorage(`the data dir's disk (${node.dataDir})`);
        throw err;
      } finally {
        done();
      }
      const stream = createReadStream(snap.path);
      stream.on('close', () => void rm(dir, { recursive: true, force: true }));
      return c.body(Readable.toWeb(stream) as ReadableStream, 200, { 'Content-Type': 'application/vnd.sqlite3', 'X-Strata-Lsn': String(snap.lsn), 'X-Strata-Epoch': String(node.replication.epoch()) });
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/replication/blobs/:sha256',
      summary: 'A referenced blob, for replicas that do not share the object tier',
      tag: 'replication',
      access: 'service',
      params: z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/, 'a lower-case hex SHA-256') }),
      responses: { 200: { description: 'the bytes' }, 404: { description: 'not referenced' } },
    },
    async (c, { params }) => {
      const row = node.sql.db.prepare<{ key: string; tier: string; size: number }>('SELECT key, tier, size FROM blobs WHERE sha256 = ?').get(params.sha256);
      if (!row) throw new NotFound(`blob ${params.sha256} is not referenced here`);
      const stream = await node.objectTiers[row.tier === 'archive' ? 'archive' : 'hot'].get(row.key);
      return c.body(Readable.toWeb(stream) as ReadableStream, 200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(row.size) });
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/replication/fence',
      summary: 'A newer primary announces its epoch: this node stops writing and follows it',
      tag: 'replication',
      access: 'service',
      body: z.strictObject({ epoch: z.int().min(1), primary_url: z.string().url() }),
      responses: { 200: { description: '{fenced, epoch}' } },
    },
    async (c, { body }) => {
      const token = /^Bearer\s+(\S+)/i.exec(c.req.header('authorization') ?? '')?.[1] ?? '';
      return c.json(await node.replication.fence(body.epoch, body.primary_url, token));
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/backups',
      summary: 'Take a backup snapshot now (in the background)',
      tag: 'admin',
      access: 'admin',
      responses: { 202: { description: '{id}' }, 409: { description: 'backups are off, or this node is a replica' } },
    },
    (c) => {
      const backups = node.backups;
      if (!backups) throw new Conflict('backups are turned off (backup.enabled)');
      if (node.replication.role !== 'primary') throw new Conflict('only the primary takes backups');
      const id = `snap-${Date.now()}`;
      backups.snapshotNow().catch(() => undefined);
      return c.json({ id }, 202);
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/admin/backups',
      summary: 'Backup snapshots per store and the restorable window {from, to}',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: '{snapshots, window}' } },
    },
    async (c) => {
      if (!node.backups) throw new Conflict('backups are turned off (backup.enabled)');
      // Ship what is committed first, so the window ends now; but a target that cannot take
      // it (a full disk) must not hide the listing, which is what an operator needs then.
      const shipped = await node.backups.shipSegments().then(
        () => undefined,
        (err: unknown) => (err as Error).message,
      );
      return c.json({ ...(await node.backups.list()), ...(shipped ? { shipping_error: shipped } : {}) });
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/changelog/prune',
      summary: 'Prune change-log records past replication.log_retention_seconds now (it also runs every minute)',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: '{pruned}' } },
    },
    (c) => c.json({ pruned: node.pruneChangeLog() }),
  );

  router.route(
    {
      method: 'get',
      path: '/v1/admin/rollbacks',
      summary: 'Rollback files: records this node wrote alone, kept when it rejoined a newer primary',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: '{dir, files:[{file, store, epoch, first_lsn, last_lsn, records, bytes, created_at}]}' } },
    },
    (c) => {
      const dir = join(node.dataDir, 'rollback');
      return c.json({ dir, files: listRollbacks(dir) });
    },
  );

  router.route(
    {
      method: 'get',
      path: '/v1/replication/position',
      summary: "This node's state with each store's LSN, whether it is within max_lag_seconds, and its failover mode: compared by replicas deciding who stands",
      tag: 'replication',
      access: 'service',
      responses: { 200: { description: '{node_id, role, epoch, primary_url, writable, lsn: {main, billing}, within_lag, failover}' } },
    },
    (c) => c.json(node.replication.positionReport()),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/replicas/:node_id/forget',
      summary: 'Retire a node: on a primary, no longer asked after a restart nor named as a standby; on a replica, ignored as a standby of the lapsed lease at this epoch (automatic failover)',
      tag: 'admin',
      access: 'admin',
      params: z.object({ node_id: z.string().min(1).max(128) }),
      responses: { 200: { description: '{forgotten: true}' }, 404: { description: 'not a known replica (on a primary)' } },
    },
    async (c, { params, caller }) => {
      if (!node.replication.forgetReplica(params.node_id)) throw new NotFound(`${params.node_id} is not a known replica of this node`);
      // Audited when the node may write; a primary still confirming its epoch cannot, and that is when this is needed.
      if (node.replication.writable()) await node.sql.writer.write(actorOf(caller), (tx) => tx.audit('replication.forget_replica', `node:${params.node_id}`));
      node.log.warn({ node_id: params.node_id, role: node.replication.role }, 'forgot a replica');
      return c.json({ forgotten: true, node_id: params.node_id });
    },
  );

  router.route(
    {
      method: 'post',
      path: '/v1/admin/promote',
      summary: 'On a replica: become the primary with epoch + 1 and fence the former primary',
      tag: 'admin',
      access: 'admin',
      responses: { 200: { description: '{epoch}' }, 409: { description: 'already a primary' } },
    },
    async (c) => {
      const promoted = await node.replication.promote();
      // The new primary claims (or confirms it inherited) its tiers before it collects garbage.
      await node.checkTierOwnership();
      return c.json(promoted);
    },
  );
}
