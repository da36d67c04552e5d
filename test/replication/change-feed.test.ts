import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqlStore } from '../../src/engines/sql/sql-store.js';
import { createEngines, ENGINE_MIGRATIONS } from '../../src/daemon/strata-node.js';
import { applyChanges, readChanges } from '../../src/replication/change-feed.js';
import { tempDir } from '../helpers/daemon.js';
import { FsObjectStore } from '../../src/engines/objects/fs-object-store.js';
import { openTestNode } from '../helpers/node.js';

const tables = ['users', 'preferences', 'tokens', 'audit_log'];

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
    expect(engines.audit.verify()).toEqual(primary.node.audit.verify());
    expect(engines.users.get('a').tier).toBe('pro');
    await replica.close();
    await primary.close();
  });
});
