import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqlStore } from '../../src/engines/sql/sql-store.js';
import { createEngines, ENGINE_MIGRATIONS } from '../../src/daemon/strata-node.js';
import { applyChanges, readChanges } from '../../src/replication/change-feed.js';
import { tempDir } from '../helpers/daemon.js';
import { FsObjectStore } from '../../src/engines/objects/fs-object-store.js';
import { openTestNode } from '../helpers/node.js';

const tables = ['users', 'preferences', 'tokens', 'audit_log', 'conversations', 'messages', 'conversation_segments', 'usage_events', 'usage_daily', 'collections', 'vectors', 'vector_meta', 'entities', 'relations'];

function dump(store: SqlStore) {
  return Object.fromEntries(tables.map((t) => [t, store.db.prepare(`SELECT * FROM ${t} ORDER BY 1`).all()]));
}

describe('change feed', () => {
  it('replaying a primary log on an empty store reproduces every table', async () => {
    const primary = await openTestNode();
    await primary.call('POST', '/v1/users', { id: 'a', email: 'a@example.com', tier: 'free' });
    await primary.call('PUT', '/v1/users/a/preferences', { x: 1 });
    await primary.call('PATCH', '/v1/users/a', { tier: 'pro' });
    const tok = await primary.call('POST', '/v1/admin/tokens', { name: 'r', role: 'reader' });
    await primary.call('DELETE', `/v1/admin/tokens/${tok.body.id}`);
    // The chat side: conversations, an archive and a restore, usage, an erasure.
    const conv = (await primary.call('POST', '/v1/conversations', { user_id: 'a', title: 't' })).body.id;
    await primary.call('POST', `/v1/conversations/${conv}/messages`, { messages: [{ role: 'user', content: 'x', tokens: 2 }, { role: 'assistant', content: 'y' }] });
    expect((await primary.node.runConversationArchive(Date.now() + 10 * 86_400_000)).archived).toBe(1);
    await primary.call('POST', '/v1/users', { id: 'b', email: 'b@example.com', tier: 'pro' });
    const other = (await primary.call('POST', '/v1/conversations', { user_id: 'b' })).body.id;
    await primary.call('POST', `/v1/conversations/${other}/messages`, { role: 'user', content: 'z' });
    await primary.call('POST', '/v1/usage', { user_id: 'b', model: 'm', input_tokens: 3, output_tokens: 4 });
    await primary.call('POST', '/v1/users', { id: 'c', email: 'c@example.com', tier: 'pro' });
    await primary.call('POST', '/v1/usage', { user_id: 'c', model: 'm', input_tokens: 1, output_tokens: 1 });
    const erasure = (await primary.call('DELETE', '/v1/users/c')).body.job_id as string;
    await expect.poll(async () => (await primary.call('GET', `/v1/jobs/${erasure}`)).body.state, { timeout: 10_000 }).toBe('done');
    // Vectors and the graph.
    await primary.call('POST', '/v1/collections', { name: 'v', dimensions: 2, metric: 'cos' });
    await primary.call('POST', '/v1/collections/v/upsert', { vectors: [{ id: 'x', values: [1, 0], metadata: { t: ['a', 'b'] } }, { id: 'y', values: [0, 1] }] });
    await primary.call('POST', '/v1/collections/v/upsert', { vectors: [{ id: 'x', values: [1, 1], metadata: { n: 2 } }] });
    await primary.call('POST', '/v1/collections/v/delete', { ids: ['y'] });
    await primary.call('POST', '/v1/graph/entities', { entities: [{ id: 'e1', type: 't', name: 'E1', vector: { collection: 'v', id: 'x' } }, { id: 'e2', type: 't', name: 'E2' }] });
    await primary.call('POST', '/v1/graph/relations', { relations: [{ from: 'e1', type: 'r', to: 'e2' }] });

    const replica = await SqlStore.open(join(tempDir(), 'replica.db'), ENGINE_MIGRATIONS);
    const engines = createEngines(replica, primary.node.config, { hot: new FsObjectStore(tempDir()) });
    // Ship in small batches, re-sending one batch as a lost acknowledgement would.
    let lsn = 0;
    for (;;) {
      const batch = readChanges(primary.node.sql, lsn, 3);
      if (batch.length === 0) break;
      applyChanges(replica, batch);
      lsn = applyChanges(replica, batch);
    }
    expect(lsn).toBe(primary.node.sql.writer.lastLsn);
    expect(dump(replica)).toEqual(dump(primary.node.sql));
    expect(dump(replica).conversation_segments).toHaveLength(1);
    expect(dump(replica).usage_daily).toHaveLength(1);
    expect(dump(replica).vectors).toHaveLength(1);
    expect(dump(replica).relations).toHaveLength(1);
    expect(engines.audit.verify()).toEqual(primary.node.audit.verify());
    expect(engines.users.get('a').tier).toBe('pro');
    await replica.close();
    await primary.close();
  });
});
