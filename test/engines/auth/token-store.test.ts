import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TokenStore, tokenMigrations } from '../../../src/engines/auth/token-store.js';
import { SqlStore } from '../../../src/engines/sql/sql-store.js';
import { tempDir } from '../../helpers/daemon.js';
import { testKeyWrapper } from '../../helpers/keys.js';

const actor = { tokenId: 'tok_test' };

async function open(sealed: boolean) {
  const sql = await SqlStore.open(join(tempDir(), 'tokens.db'), tokenMigrations);
  return { sql, tokens: new TokenStore(sql.db, sql.changes, sql.writer, sealed ? { enabled: true, ...testKeyWrapper() } : undefined) };
}

describe('S3 credentials on tokens', () => {
  it('makes an AWS-shaped key id and secret, finds them by key id, keeps the secret sealed at rest, and forgets them with the token', async () => {
    const { sql, tokens } = await open(true);
    const t = await tokens.create(actor, { name: 'loader', role: 'reader', s3: true });
    expect(t.s3!.access_key_id).toMatch(/^STRATA[A-Z2-7]{14}$/);
    expect(t.s3!.secret_access_key).toMatch(/^[A-Za-z0-9]{40}$/);
    expect(tokens.s3Credential(t.s3!.access_key_id)).toEqual({ secret: t.s3!.secret_access_key, info: expect.objectContaining({ id: t.id, role: 'reader' }) });
    const row = sql.db.prepare<{ s3_secret: Uint8Array }>('SELECT s3_secret FROM tokens WHERE id = ?').get(t.id)!;
    expect(Buffer.from(row.s3_secret)[0]).toBe(1);
    expect(Buffer.from(row.s3_secret).includes(Buffer.from(t.s3!.secret_access_key))).toBe(false);
    // Nor is it in the change log, which replicas and backups carry.
    const log = sql.db.prepare<{ payload: Uint8Array }>('SELECT payload FROM changelog').all();
    expect(log.some((r) => Buffer.from(r.payload).includes(Buffer.from(t.s3!.secret_access_key)))).toBe(false);
    expect(tokens.s3Credential('STRATANOSUCHKEY00000')).toBeUndefined();
    await tokens.delete(actor, t.id);
    expect(tokens.s3Credential(t.s3!.access_key_id)).toBeUndefined();
    // A plain token has none.
    expect((await tokens.create(actor, { name: 'plain', role: 'reader' })).s3).toBeUndefined();
    await sql.close();
  });

  it('stores the secret plain (marked so) when encryption is off', async () => {
    const { sql, tokens } = await open(false);
    const t = await tokens.create(actor, { name: 'loader', role: 'service', s3: true });
    const row = sql.db.prepare<{ s3_secret: Uint8Array }>('SELECT s3_secret FROM tokens WHERE id = ?').get(t.id)!;
    expect(Buffer.from(row.s3_secret)[0]).toBe(0);
    expect(tokens.s3Credential(t.s3!.access_key_id)?.secret).toBe(t.s3!.secret_access_key);
    await sql.close();
  });
});
