import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { unzipSync } from 'fflate';
import { afterEach, describe, expect, it } from 'vitest';
import { api, runCli, startDaemon, tempDir, type Daemon } from '../helpers/daemon.js';

// Encryption at rest and crypto-shredding, on real daemons: after messages, preferences, an
// uploaded model file, an archive run and a backup, no file under the data dir holds a marker
// written as user content — also not inside gzip'd files (segments, archives).

const MARKER = 'ZEBRA-MARKER-4b1d';
const running: Daemon[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop().catch(() => undefined);
});

function keyFile(): string {
  const file = join(tempDir('strata-key-'), 'master.key');
  writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  return file;
}

const encrypted = (file: string) => [
  'encryption.enabled=true',
  `encryption.master_key_file=${file}`,
  'backup.segment_seconds=0.2',
  // Conversations idle for about a second move to the archive tier.
  'tiers.free.daily_token_limit=1000000',
  'tiers.free.conversation_retention_days=7',
  'tiers.free.conversation_hot_days=0.00001',
];

async function start(set: string[], dataDir?: string) {
  const d = await startDaemon({ ...(dataDir ? { dataDir } : {}), set });
  running.push(d);
  return d;
}

const strata = runCli;

/** Files under `dir` whose bytes (or, for gzip files, whose decompressed bytes) contain `needle`. */
function filesContaining(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else {
        const raw = readFileSync(p);
        let text = raw.includes(needle);
        if (!text && raw[0] === 0x1f && raw[1] === 0x8b) {
          try {
            text = gunzipSync(raw).includes(needle);
          } catch {
            // not gzip after all
          }
        }
        if (text) hits.push(p);
      }
    }
  };
  walk(dir);
  return hits;
}

async function seed(d: Daemon, user: string, marker: string) {
  expect((await api(d, 'POST', '/v1/users', { id: user, email: `${marker.toLowerCase()}@example.com`, tier: 'free' })).status).toBe(201);
  expect((await api(d, 'PUT', `/v1/users/${user}/preferences`, { note: marker })).status).toBe(200);
  const conv = (await api(d, 'POST', '/v1/conversations', { user_id: user, title: `about ${marker}` })).body.id as string;
  expect((await api(d, 'POST', `/v1/conversations/${conv}/messages`, { messages: [{ role: 'user', content: `my secret is ${marker}` }, { role: 'assistant', content: `noted: ${marker}` }] })).status).toBe(201);
  return conv;
}

describe('encryption at rest', () => {
  it('no file under the data dir holds user content, while the API returns it intact', async () => {
    const key = keyFile();
    const d = await start(encrypted(key));
    const conv = await seed(d, 'u1', MARKER);
    const h = { authorization: `Bearer ${d.adminToken}` };
    // A model file with the marker in it, downloaded once so the NVMe cache holds it too.
    const weights = Buffer.concat([randomBytes(150_000), Buffer.from(MARKER.repeat(100)), randomBytes(100_000)]);
    expect((await api(d, 'PUT', '/v1/models/m', {})).status).toBeLessThan(300);
    expect((await api(d, 'POST', '/v1/models/m/versions', { version: 'v1' })).status).toBe(201);
    const sha = createHash('sha256').update(weights).digest('hex');
    const up = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { method: 'PUT', headers: { ...h, 'x-content-sha256': sha }, body: weights });
    expect(up.status).toBeLessThan(300);
    const down = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { headers: h });
    expect(Buffer.from(await down.arrayBuffer()).equals(weights)).toBe(true);
    const ranged = await fetch(`${d.url}/v1/models/m/versions/v1/files/w.bin`, { headers: { ...h, range: 'bytes=65530-65545' } });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(weights.subarray(65530, 65546))).toBe(true);
    // Feedback text, and a dataset whose raw file and Parquet shards hold the marker.
    expect((await api(d, 'POST', '/v1/feedback/comparisons', { prompt: `which ${MARKER}?`, responses: [`yes ${MARKER}`, 'no'], chosen: 0, user_id: 'u1' })).status).toBe(201);
    expect((await api(d, 'POST', '/v1/feedback/ratings', { prompt: `rate ${MARKER}`, response: 'ok', score: 5 })).status).toBe(201);
    // A ledger description is personal data kept for ever: sealed with the user's key too.
    const entry = await api(d, 'POST', '/v1/billing/entries', { user_id: 'u1', kind: 'charge', amount_micros: 10, currency: 'USD', ref: 'enc-1', description: `card of ${MARKER}` });
    expect(entry.status).toBe(201);
    expect(entry.body.description).toBe(`card of ${MARKER}`);
    expect((await api(d, 'POST', '/v1/datasets', { name: 'ds' })).status).toBe(201);
    const raw = Array.from({ length: 50 }, (_, i) => JSON.stringify({ text: `row ${i} says ${MARKER}` })).join('\n');
    expect((await fetch(`${d.url}/v1/datasets/ds/raw/a.jsonl`, { method: 'PUT', headers: h, body: raw })).status).toBe(201);
    const pipelineJob = (await api(d, 'POST', '/v1/datasets/ds/jobs', { steps: ['normalize', 'dedup', 'tokenize'] })).body.job_id;
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${pipelineJob}`)).body.state, { timeout: 20_000 }).toBe('done');
    const shard = await fetch(`${d.url}/v1/datasets/ds/versions/1/shards/shard-00000.parquet`, { headers: h });
    expect(Buffer.from(await shard.arrayBuffer()).includes(MARKER)).toBe(true);
    const pairs = await (await fetch(`${d.url}/v1/feedback/export?kind=comparisons`, { headers: h })).text();
    expect(pairs).toContain(`yes ${MARKER}`);
    // The archive job moves the idle conversation into a (sealed) archive object.
    await new Promise((r) => setTimeout(r, 1200));
    expect((await api(d, 'POST', '/v1/admin/jobs/conversation-archive')).body.archived).toBe(1);
    expect((await api(d, 'POST', '/v1/admin/backups')).status).toBeLessThan(300);
    await new Promise((r) => setTimeout(r, 600));

    const messages = (await api(d, 'GET', `/v1/conversations/${conv}/messages`)).body.items.map((m: { content: string }) => m.content);
    expect(messages).toEqual([`my secret is ${MARKER}`, `noted: ${MARKER}`]);
    expect((await api(d, 'GET', `/v1/conversations/${conv}`)).body.title).toBe(`about ${MARKER}`);
    expect((await api(d, 'GET', '/v1/users/u1')).body.email).toBe(`${MARKER.toLowerCase()}@example.com`);
    expect((await api(d, 'GET', '/v1/users/u1/preferences')).body).toEqual({ note: MARKER });
    expect((await api(d, 'GET', '/v1/billing/entries?user_id=u1')).body.items[0].description).toBe(`card of ${MARKER}`);
    expect((await api(d, 'GET', '/v1/billing/verify')).body).toMatchObject({ ok: true, entries: 1 });
    // Email uniqueness still holds through the blind index.
    expect((await api(d, 'POST', '/v1/users', { id: 'dup', email: `${MARKER.toUpperCase()}@EXAMPLE.com`, tier: 'free' })).status).toBe(409);

    expect(filesContaining(d.dataDir, MARKER)).toEqual([]);
    expect(filesContaining(d.dataDir, MARKER.toLowerCase())).toEqual([]);
    await d.stop();
    running.splice(0);
    expect(filesContaining(d.dataDir, MARKER)).toEqual([]);
    // backup verify opens the sealed blobs with the restored keyring and checks their sha256.
    const verify = await strata(['backup', 'verify', '--set', `storage.data_dir=${d.dataDir}`, ...encrypted(key).flatMap((x) => ['--set', x])]);
    expect(verify.code, verify.err + verify.out).toBe(0);
    expect(JSON.parse(verify.out).blobs).toEqual({ referenced: 1, verified: 1 });
  });

  it('keys rotate re-wraps the KEK: the new key opens the data dir, the old one no longer does', async () => {
    const oldKey = keyFile();
    const d = await start(encrypted(oldKey));
    await seed(d, 'u1', MARKER);
    await d.stop();
    running.splice(0);
    const dbBefore = readFileSync(join(d.dataDir, 'strata.db'));
    const newKey = keyFile();
    const set = (key: string) => ['--set', `storage.data_dir=${d.dataDir}`, ...encrypted(key).flatMap((x) => ['--set', x])];
    const rotated = await strata(['keys', 'rotate', ...set(oldKey), '--new-key-file', newKey]);
    expect(rotated.code, rotated.err).toBe(0);
    expect(JSON.parse(rotated.out)).toMatchObject({ rotated: true });
    // One row changed, not the data: the file differs by little more than a page or two.
    expect(Math.abs(readFileSync(join(d.dataDir, 'strata.db')).length - dbBefore.length)).toBeLessThan(64 * 1024);
    const withOld = await strata(['serve', '--set', 'server.listen=127.0.0.1:0', ...set(oldKey)]);
    expect(withOld.err).toMatch(/does not open this data dir/);
    const again = await start(encrypted(newKey), d.dataDir);
    expect((await api(again, 'GET', '/v1/users/u1/preferences')).body).toEqual({ note: MARKER });
  });

  it('a replica with the same master key serves the sealed data and holds no plaintext either', async () => {
    const key = keyFile();
    const p = await start(encrypted(key));
    const conv = await seed(p, 'u1', MARKER);
    const rDir = tempDir();
    writeFileSync(join(rDir, 'admin.token'), p.adminToken + '\n');
    const r = await start([...encrypted(key), 'node.id=replica-1', 'replication.role=replica', `replication.primary_url=${p.url}`, `replication.token=${p.adminToken}`], rDir);
    await expect.poll(async () => (await api(r, 'GET', `/v1/conversations/${conv}/messages`, undefined, p.adminToken)).status, { timeout: 20_000 }).toBe(200);
    const read = await api(r, 'GET', `/v1/conversations/${conv}/messages`, undefined, p.adminToken);
    expect(read.body.items.map((m: { content: string }) => m.content)).toEqual([`my secret is ${MARKER}`, `noted: ${MARKER}`]);
    // Written after the bootstrap: arrives through the change feed, sealed.
    await api(p, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: `later ${MARKER}` });
    await expect.poll(async () => (await api(r, 'GET', `/v1/conversations/${conv}/messages`, undefined, p.adminToken)).body.items?.length, { timeout: 20_000 }).toBe(3);
    expect((await api(r, 'GET', '/v1/users/u1/preferences', undefined, p.adminToken)).body).toEqual({ note: MARKER });
    expect(filesContaining(rDir, MARKER)).toEqual([]);
  });

  it('a wrong, missing or malformed key stops the daemon at start with a clear error', async () => {
    const key = keyFile();
    const d = await start(encrypted(key));
    await seed(d, 'u1', MARKER);
    await d.stop();
    running.splice(0);
    const serve = (set: string[]) => strata(['serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${d.dataDir}`, ...set.flatMap((s) => ['--set', s])]);
    const wrong = await serve(encrypted(keyFile()));
    expect(wrong.code).not.toBe(0);
    expect(wrong.err).toMatch(/does not open this data dir, which is encrypted with master key id/);
    const off = await serve(['encryption.enabled=false']);
    expect(off.code).not.toBe(0);
    expect(off.err).toMatch(/this data dir is encrypted/);
    const missing = await serve(encrypted('/nonexistent/master.key'));
    expect(missing.err).toMatch(/cannot read the master key file/);
    const short = join(tempDir(), 'short.key');
    writeFileSync(short, randomBytes(16).toString('base64'));
    expect((await serve(encrypted(short))).err).toMatch(/must be 32 random bytes in base64/);
    // The right key still opens it.
    const again = await start(encrypted(key), d.dataDir);
    expect((await api(again, 'GET', '/v1/users/u1/preferences')).body).toEqual({ note: MARKER });
  });

  it('erasure destroys the key: a backup restored to before the erasure does not reveal the user, export then answers 404', async () => {
    const key = keyFile();
    const d = await start(encrypted(key));
    const gone = await seed(d, 'gone', MARKER);
    const kept = await seed(d, 'kept', 'KEPT-CONTENT');
    expect((await api(d, 'POST', '/v1/billing/entries', { user_id: 'gone', kind: 'charge', amount_micros: 42, currency: 'USD', ref: 'g-1', description: `visa of ${MARKER}` })).status).toBe(201);
    expect((await api(d, 'POST', '/v1/admin/backups')).status).toBeLessThan(300);
    await new Promise((r) => setTimeout(r, 1100));
    const beforeErasure = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 1100));

    // Export first: a zip of JSON files with everything about the user.
    const exported = await fetch(`${d.url}/v1/users/gone/export`, { headers: { authorization: `Bearer ${d.adminToken}` } });
    expect(exported.status).toBe(200);
    expect(exported.headers.get('content-type')).toBe('application/zip');
    const files = unzipSync(new Uint8Array(await exported.arrayBuffer()));
    expect(Object.keys(files).sort()).toEqual(['billing.json', `conversations/${gone}.json`, 'feedback.json', 'preferences.json', 'profile.json', 'usage.json']);
    const dump = JSON.parse(Buffer.from(files[`conversations/${gone}.json`]!).toString()) as { messages: Array<{ content: string }> };
    expect(dump.messages.map((m) => m.content)).toEqual([`my secret is ${MARKER}`, `noted: ${MARKER}`]);

    const job = await api(d, 'POST', '/v1/users/gone/erase');
    expect(job.status).toBe(202);
    await expect.poll(async () => (await api(d, 'GET', `/v1/jobs/${job.body.job_id}`)).body, { timeout: 10_000 }).toMatchObject({ state: 'done', progress: 1, result: { key_destroyed: true } });
    expect((await api(d, 'GET', '/v1/users/gone/export')).status).toBe(404);
    // The ledger keeps the entry, amount and ref; its description went with the key. The chain still verifies.
    expect((await api(d, 'GET', '/v1/billing/entries?user_id=gone')).body.items).toEqual([expect.objectContaining({ ref: 'g-1', amount_micros: 42, description: null })]);
    expect((await api(d, 'GET', '/v1/billing/verify')).body).toMatchObject({ ok: true, entries: 1 });
    expect((await api(d, 'GET', `/v1/conversations/${gone}`)).status).toBe(404);
    const audit = (await api(d, 'GET', '/v1/admin/audit?limit=20')).body.items.map((e: { action: string }) => e.action);
    expect(audit).toEqual(expect.arrayContaining(['users.export', 'users.erase', 'users.erase_done']));
    await new Promise((r) => setTimeout(r, 600));
    expect((await api(d, 'GET', '/v1/admin/backups')).status).toBe(200);

    // A restore to a time when the user still existed has their rows, but not their key.
    const dir = tempDir();
    const restored = await strata(['restore', '--set', `storage.data_dir=${d.dataDir}`, '--to', beforeErasure, '--target-dir', dir]);
    expect(restored.code, restored.err).toBe(0);
    writeFileSync(join(dir, 'admin.token'), d.adminToken + '\n');
    const r = await start([...encrypted(key), 'backup.enabled=false'], dir);
    expect((await api(r, 'GET', '/v1/users/gone', undefined, d.adminToken)).status).toBe(200);
    const revealed = await api(r, 'GET', `/v1/conversations/${gone}/messages`, undefined, d.adminToken);
    expect(JSON.stringify(revealed.body)).not.toContain(MARKER);
    expect(JSON.stringify((await api(r, 'GET', '/v1/users/gone/preferences', undefined, d.adminToken)).body)).not.toContain(MARKER);
    expect((await api(r, 'GET', '/v1/billing/entries?user_id=gone', undefined, d.adminToken)).body.items[0].description).toBeNull();
    // Everyone else's data is readable: their keys came back from the backup's key prefix.
    const other = await api(r, 'GET', `/v1/conversations/${kept}/messages`, undefined, d.adminToken);
    expect(other.body.items.map((m: { content: string }) => m.content)).toEqual(['my secret is KEPT-CONTENT', 'noted: KEPT-CONTENT']);
    expect(filesContaining(join(d.dataDir, 'backups'), MARKER)).toEqual([]);
  });
});
