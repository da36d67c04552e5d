import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { openDatabase } from '../engines/sql/database.js';
import { BillingLedger } from '../engines/billing/billing-ledger.js';
import { FsObjectStore } from '../engines/objects/fs-object-store.js';
import { restore, type StoreSpec } from '../replication/restore.js';
import { bufferSource, type BackupArchive } from '../replication/backup-archive.js';
import type { StrataConfig } from './config.js';
import { openObjectTier } from './object-tiers.js';
import { kekWrapper } from '../engines/crypto/keyring.js';
import { loadMasterKey } from '../engines/crypto/master-key.js';
import { Sealer } from '../engines/crypto/sealed-stream.js';
import { SealedObjectStore } from '../engines/objects/sealed-object-store.js';
import { SqlStore } from '../engines/sql/sql-store.js';
import { createLogger } from './logger.js';
import { startServer, type RunningServer } from './server.js';
import { unpack } from 'msgpackr';
import { FieldCipher } from '../engines/crypto/field-cipher.js';
import { readRollback, type RollbackContents } from '../replication/rollback.js';
import { BILLING_MIGRATIONS, createEngines, ENGINE_MIGRATIONS, StrataNode } from './strata-node.js';

// `strata restore`, `strata backup verify` and `strata promote`: the recovery commands. They
// print progress on stderr and a JSON summary on stdout, and exit non-zero on any failure.

function storeSpecs(config: StrataConfig, scratch: string): StoreSpec[] {
  return [
    {
      name: 'main',
      file: 'strata.db',
      migrations: ENGINE_MIGRATIONS,
      // Only the change types are needed to replay; the object tier is never touched.
      define: (store) => void createEngines(store, config, { hot: new FsObjectStore(join(scratch, 'unused-objects')) }),
    },
    { name: 'billing', file: 'billing.db', migrations: BILLING_MIGRATIONS, define: (store) => void new BillingLedger(store) },
  ];
}

/**
 * `strata restore`. The copy gets a cluster identity of its own unless `replace`: a restored
 * data dir started beside its source, on the same object tier, must not take the source's
 * blobs for its own garbage (see tier-owner.ts). With `replace` it is the source, brought back.
 */
export async function restoreCommand(config: StrataConfig, to: string | undefined, targetDir: string | undefined, replace = false): Promise<number> {
  if (!to || !targetDir) throw new Error('restore needs --to TIME|latest and --target-dir DIR');
  const time = to === 'latest' ? 'latest' : Date.parse(to);
  if (time !== 'latest' && Number.isNaN(time)) throw new Error(`--to must be an RFC 3339 time or "latest", not ${to}`);
  const archive = await StrataNode.openBackupArchive(config, resolve(config.storage.data_dir));
  const scratch = await mkdtemp(join(tmpdir(), 'strata-restore-'));
  try {
    const started = performance.now();
    const results = await restore(archive, storeSpecs(config, scratch), {
      to: time,
      targetDir: resolve(targetDir),
      progress: (l) => process.stderr.write(`restore: ${l}\n`),
      clusterId: replace ? undefined : randomUUID(),
      keepReplicas: replace,
    });
    const seconds = (performance.now() - started) / 1000;
    const db = await openDatabase(join(resolve(targetDir), 'strata.db'));
    let clusterId: string;
    try {
      clusterId = db.prepare<{ value: string }>("SELECT value FROM meta WHERE key = 'cluster_id'").get()?.value ?? '';
    } finally {
      db.close();
    }
    process.stderr.write(
      replace
        ? `restore: the copy keeps the source's cluster identity (${clusterId}): it owns the object tiers; never start it beside the source\n`
        : `restore: the copy is a new cluster (${clusterId}): it reads the configured object tiers but never deletes from tiers another cluster owns\n`,
    );
    process.stdout.write(JSON.stringify({ target_dir: resolve(targetDir), cluster_id: clusterId, replaced: replace, seconds: Math.round(seconds * 100) / 100, stores: results.map((r) => ({ ...r, time: new Date(r.time).toISOString() })) }, null, 2) + '\n');
    return 0;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Restores the latest backup into `scratch`/data and checks it offline: integrity of both
 * files, row counts per table, and every referenced blob's bytes against its sha256. Shared by
 * `backup verify` and `drill` (which then serves the copy and reads it over HTTP).
 */
async function restoreAndCheck(config: StrataConfig, scratch: string, label: string): Promise<{ target: string; report: Record<string, unknown>; problems: string[]; archive: BackupArchive }> {
  const dataDir = resolve(config.storage.data_dir);
  const archive = await StrataNode.openBackupArchive(config, dataDir);
  const problems: string[] = [];
  const report: Record<string, unknown> = {};
  const target = join(scratch, 'data');
  try {
    const results = await restore(archive, storeSpecs(config, scratch), { to: 'latest', targetDir: target, progress: (l) => process.stderr.write(`${label}: ${l}\n`) });
    report.restored = results.map((r) => ({ store: r.store, lsn: r.lsn, time: new Date(r.time).toISOString() }));
    for (const file of ['strata.db', 'billing.db']) {
      const db = await openDatabase(join(target, file));
      try {
        const integrity = db.prepare<{ integrity_check: string }>('PRAGMA integrity_check').all().map((r) => r.integrity_check);
        if (integrity.join() !== 'ok') problems.push(`${file}: integrity_check says ${integrity.join('; ')}`);
        const tables = db.prepare<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all();
        report[file] = Object.fromEntries(tables.map(({ name }) => [name, db.prepare<{ n: number }>(`SELECT COUNT(*) AS n FROM "${name}"`).get()!.n]));
        if (file === 'strata.db') {
          const master = StrataNode.masterKey(config);
          const sealer = master ? new Sealer(kekWrapper(db, master)) : undefined;
          const open = async (tier: 'hot' | 'archive') => {
            const raw = await openObjectTier(tier, config.objects[tier], dataDir);
            return sealer ? new SealedObjectStore(raw, sealer) : raw;
          };
          const tiers = { hot: await open('hot'), archive: await open('archive') };
          const blobs = db.prepare<{ sha256: string; key: string; tier: string; size: number }>('SELECT sha256, key, tier, size FROM blobs').all();
          let checked = 0;
          for (const b of blobs) {
            const store = tiers[b.tier as 'hot' | 'archive'];
            try {
              const hash = createHash('sha256');
              for await (const chunk of await store.get(b.key)) hash.update(chunk as Buffer);
              if (hash.digest('hex') !== b.sha256) problems.push(`blob ${b.sha256} in ${b.tier} does not match its hash`);
              else checked++;
            } catch (err) {
              problems.push(`blob ${b.sha256} (${b.tier}:${b.key}) cannot be read: ${(err as Error).message}`);
            }
          }
          report.blobs = { referenced: blobs.length, verified: checked };
        }
      } finally {
        db.close();
      }
    }
  } catch (err) {
    problems.push((err as Error).message);
  }
  return { target, report, problems, archive };
}

/** Writes status/<name>.json to the backup target, where every node reads it for its metrics. */
async function writeStatus(archive: BackupArchive, name: string, status: Record<string, unknown>): Promise<void> {
  await archive.objects.put(`status/${name}.json`, bufferSource(Buffer.from(JSON.stringify(status))));
}

export async function backupVerifyCommand(config: StrataConfig): Promise<number> {
  const scratch = await mkdtemp(join(tmpdir(), 'strata-verify-'));
  let checked;
  try {
    checked = await restoreAndCheck(config, scratch, 'verify');
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const { report, problems, archive } = checked;
  report.ok = problems.length === 0;
  report.problems = problems;
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  if (problems.length === 0) {
    await writeStatus(archive, 'verify', { at: Date.now(), ok: true });
    process.stderr.write('verify: ok\n');
    return 0;
  }
  process.stderr.write(`verify: FAILED (${problems.length} problem(s))\n`);
  return 1;
}

/** Asks the daemon serving this config's data dir to promote itself (it must be a replica). */
export async function promoteCommand(config: StrataConfig): Promise<number> {
  const token = readFileSync(join(resolve(config.storage.data_dir), 'admin.token'), 'utf8').trim();
  const listen = config.server.listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
  const url = `${config.server.tls ? 'https' : 'http'}://${listen}/v1/admin/promote`;
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  const body = await res.text();
  process.stdout.write(body + '\n');
  return res.ok ? 0 : 1;
}

/**
 * `strata keys rotate --new-key-file F`: re-wraps the KEK under a new master key, one row; no
 * data and no data key is rewritten. Run it with the daemon stopped, then point
 * encryption.master_key_file at F. Replicas receive the new row through the change log, so
 * give them the new key first (they keep working with the old one until the row arrives).
 */
export async function keysRotateCommand(config: StrataConfig, newKeyFile: string | undefined): Promise<number> {
  if (!newKeyFile) throw new Error('keys rotate needs --new-key-file FILE (32 random bytes in base64)');
  const current = StrataNode.masterKey(config);
  if (!current) throw new Error('encryption is not enabled in this config: there is nothing to rotate');
  const next = loadMasterKey({ file: newKeyFile });
  const dataDir = resolve(config.storage.data_dir);
  const sql = await SqlStore.open(join(dataDir, 'strata.db'), ENGINE_MIGRATIONS);
  try {
    const engines = createEngines(sql, config, { hot: new FsObjectStore(join(dataDir, '.unused-objects')), masterKey: current, log: createLogger('silent') });
    const { from, to } = await engines.keyring.rotate(sql.writer, next);
    process.stdout.write(`${JSON.stringify({ rotated: true, from_master_key_id: from, to_master_key_id: to })}\n`);
    process.stderr.write(`keys: the KEK is now wrapped by master key ${to}; set encryption.master_key_file to ${newKeyFile} before the next start\n`);
    return 0;
  } finally {
    await sql.close();
  }
}

/**
 * `strata rollback show FILE`: the records of a rollback file as JSON lines (lsn, time, engine,
 * op, payload), a summary on stderr. Sealed fields ("enc1:…") are opened when the config's
 * master key is present and the data dir still holds the user's key — tried with the nearest
 * `user_id` around the field; one that does not open is printed as stored.
 */
export async function rollbackShowCommand(config: StrataConfig | undefined, file: string | undefined): Promise<number> {
  if (!file) {
    process.stderr.write('strata: rollback show needs a FILE (see GET /v1/admin/rollbacks or <data_dir>/rollback)\n');
    return 2;
  }
  let contents: RollbackContents;
  try {
    contents = readRollback(file);
  } catch (err) {
    process.stderr.write(`strata: ${(err as Error).message}\n`);
    return 1;
  }
  const node = config?.encryption.enabled ? await StrataNode.open(config, createLogger('silent')) : undefined;
  try {
    const cipher = node ? new FieldCipher(node.keyring) : undefined;
    const ownerOf = (conversation: string) => node?.sql.db.prepare<{ user_id: string }>('SELECT user_id FROM conversations WHERE id = ?').get(conversation)?.user_id;
    const open = (value: unknown, userId: string | undefined): unknown => {
      if (typeof value === 'string') {
        if (!cipher || !userId || !value.startsWith('enc1:')) return value;
        try {
          return cipher.open(userId, value) ?? value;
        } catch {
          return value;
        }
      }
      if (Array.isArray(value)) return value.map((v) => open(v, userId));
      if (value && typeof value === 'object' && !(value instanceof Uint8Array)) {
        const { user_id: own, conversation_id: conversation } = value as { user_id?: unknown; conversation_id?: unknown };
        // Message records name their conversation, not its owner: the owner is looked up.
        const owner = typeof conversation === 'string' && own === undefined ? ownerOf(conversation) : undefined;
        const uid = typeof own === 'string' ? own : (owner ?? userId);
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, open(v, uid)]));
      }
      return value;
    };
    for (const r of contents.records) {
      const payload = open(unpack(r.payload), undefined);
      process.stdout.write(JSON.stringify({ lsn: r.lsn, time: new Date(r.time).toISOString(), engine: r.engine, op: r.op, payload }, (_, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)) + '\n');
    }
  } finally {
    await node?.close();
  }
  const { records } = contents;
  process.stderr.write(
    `${file}: ${records.length} ${contents.store} record(s), LSN ${records[0]?.lsn ?? '-'}–${records[records.length - 1]?.lsn ?? '-'}, discarded by node ${contents.node_id} at ${contents.discarded_at} when it rejoined the primary of epoch ${contents.epoch}\n`,
  );
  return 0;
}

/**
 * `strata drill`: the disaster-recovery drill. Restores the latest backup into a scratch
 * directory and checks it as `backup verify` does, then serves the copy on a free loopback
 * port — no background jobs, no backups, no replication, its own cache and index directories,
 * reading (never deleting from) the source's object tiers — and reads every engine through
 * HTTP: readiness, the audit chain, a user, a conversation's messages, a vector query per
 * collection that must find a stored vector, a model file whose bytes must hash to its
 * sha256, the billing ledger. A JSON report on stdout; exit 1 on any failure. On success,
 * status/drill.json in the backup target carries the time and duration, which every node
 * exports as strata_drill_last_success_timestamp_seconds and strata_drill_duration_seconds.
 */
export async function drillCommand(config: StrataConfig): Promise<number> {
  const started = Date.now();
  const scratch = await mkdtemp(join(tmpdir(), 'strata-drill-'));
  const problems: string[] = [];
  let report: Record<string, unknown> = {};
  let archive: BackupArchive | undefined;
  const probes: Record<string, unknown> = {};
  let node: StrataNode | undefined;
  let server: RunningServer | undefined;
  try {
    const checked = await restoreAndCheck(config, scratch, 'drill');
    ({ report, archive } = checked);
    problems.push(...checked.problems);
    if (problems.length === 0) {
      process.stderr.write('drill: restored and checked; starting a node on the copy\n');
      node = await StrataNode.open(drillConfig(config, checked.target, scratch), createLogger('silent'));
      server = await startServer(node);
      const token = (await node.tokens.create({ tokenId: 'drill' }, { name: 'drill', role: 'admin' })).token;
      await probeEngines(server.url, token, node, probes, problems);
    }
  } catch (err) {
    problems.push((err as Error).message);
  } finally {
    if (server) await server.stop('drill finished').catch(() => undefined);
    else await node?.close().catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  }
  const seconds = (Date.now() - started) / 1000;
  const out = { ok: problems.length === 0, duration_seconds: seconds, ...report, probes, problems };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  if (problems.length > 0 || !archive) {
    process.stderr.write(`drill: FAILED (${problems.length} problem(s)) in ${seconds.toFixed(1)} s\n`);
    return 1;
  }
  await writeStatus(archive, 'drill', { at: Date.now(), ok: true, duration_seconds: seconds });
  process.stderr.write(`drill: ok in ${seconds.toFixed(1)} s\n`);
  return 0;
}

/** The config of the node a drill serves: the copy's files only, the source's tiers read-only in effect. */
function drillConfig(config: StrataConfig, target: string, scratch: string): StrataConfig {
  const source = resolve(config.storage.data_dir);
  const c = structuredClone(config);
  c.storage.data_dir = target;
  c.server.listen = '127.0.0.1:0';
  delete (c.server as { tls?: unknown }).tls;
  c.backup.enabled = false;
  // A lone primary: it confirms no epoch, takes no lease and so stands for no failover.
  Object.assign(c.replication, { role: 'primary', confirm_epoch: false, redirect_writes: false, failover: 'manual' });
  delete (c.replication as { primary_url?: unknown }).primary_url;
  c.replication.lease.enabled = false;
  // Never the live node's files: the ledger and the indexes are the copy's, the cache the drill's.
  c.billing.path = join(target, 'billing.db');
  c.vectors.index_dir = join(target, 'indexes');
  c.models.cache.path = join(scratch, 'cache');
  for (const tier of ['hot', 'archive'] as const) {
    const o = c.objects[tier] as { driver: string; path?: string } | undefined;
    if (o?.driver === 'fs' && !o.path) o.path = join(source, 'objects', tier);
  }
  return c;
}

async function probeEngines(base: string, token: string, node: StrataNode, probes: Record<string, unknown>, problems: string[]): Promise<void> {
  const get = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(base + path, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
  };
  const json = (b: Buffer) => JSON.parse(b.toString('utf8')) as Record<string, unknown>;
  const expectOk = async (name: string, path: string, init?: RequestInit, check?: (body: Buffer) => string | undefined) => {
    try {
      const r = await get(path, init);
      const problem = r.status !== 200 ? `answered ${r.status}: ${r.body.toString('utf8').slice(0, 200)}` : check?.(r.body);
      probes[name] = problem ? { ok: false, problem } : { ok: true };
      if (problem) problems.push(`${name}: ${problem}`);
    } catch (err) {
      probes[name] = { ok: false, problem: (err as Error).message };
      problems.push(`${name}: ${(err as Error).message}`);
    }
  };
  const db = node.sql.db;
  const one = <T>(sql: string) => db.prepare<T>(sql).get();
  await expectOk('readyz', '/readyz');
  await expectOk('audit_chain', '/v1/admin/audit/verify', undefined, (b) => (json(b).ok === true ? undefined : `the chain breaks: ${b.toString('utf8').slice(0, 200)}`));
  const user = one<{ id: string }>('SELECT id FROM users LIMIT 1');
  if (user) await expectOk('users', `/v1/users/${encodeURIComponent(user.id)}`);
  const conversation = one<{ id: string }>('SELECT id FROM conversations LIMIT 1');
  if (conversation) await expectOk('conversations', `/v1/conversations/${encodeURIComponent(conversation.id)}/messages?last=10`);
  for (const { name } of db.prepare<{ name: string }>('SELECT name FROM collections ORDER BY name').all()) {
    const v = db.prepare<{ id: string; vec: Uint8Array }>('SELECT id, vec FROM vectors WHERE collection = ? LIMIT 1').get(name);
    if (!v) continue;
    const values = Array.from(new Float32Array(new Uint8Array(v.vec).buffer));
    await expectOk(`vectors:${name}`, `/v1/collections/${encodeURIComponent(name)}/query`, { method: 'POST', body: JSON.stringify({ vector: values, top_k: 10 }) }, (b) =>
      ((json(b).matches as Array<{ id: string }> | undefined) ?? []).some((m) => m.id === v.id) ? undefined : `a query with vector ${v.id}'s own values did not find it`,
    );
  }
  const file = one<{ model: string; version: string; path: string; sha256: string }>('SELECT model, version, path, sha256 FROM model_files ORDER BY size LIMIT 1');
  if (file) {
    await expectOk('models', `/v1/models/${encodeURIComponent(file.model)}/versions/${encodeURIComponent(file.version)}/files/${file.path.split('/').map(encodeURIComponent).join('/')}`, undefined, (b) =>
      createHash('sha256').update(b).digest('hex') === file.sha256 ? undefined : 'the downloaded bytes do not match the sha256',
    );
  }
  await expectOk('billing', '/v1/billing/verify', undefined, (b) => (json(b).ok === false ? `the ledger's chain breaks: ${b.toString('utf8').slice(0, 200)}` : undefined));
}
