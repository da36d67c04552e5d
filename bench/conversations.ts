import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { Redis } from 'ioredis';
import { closedLoop, row, spawnUntil, stop, type BenchOptions, type LoadResult, type ResultRow } from './lib.js';

// The chat side over HTTP at 64 concurrent keep-alive connections, each row beside a bare peer
// measured in the same run:
// - message_append: POST a message (auth, validation, gapless seq, counts, change log, audit,
//   group commit, cache refresh) vs node:http + one better-sqlite3 insert per request;
// - message_read: the last 50 messages (served from the hot cache) vs an ioredis GET of the
//   same bytes behind node:http;
// - usage_record: POST /v1/usage (quota check-and-consume + durable event) vs ioredis INCRBY;
// - preferences_read: GET preferences (read-through cache) vs an ioredis GET of the same JSON.

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const SQLITE_PEER = join(here, 'peers/message-sqlite-http-server.js');
const REDIS_PEER = join(here, 'peers/redis-http-server.js');
const CONCURRENCY = 64;

const message = (i: number) => ({ role: i % 2 ? 'assistant' : 'user', content: `Message ${i}: ${'lorem ipsum dolor sit amet '.repeat(8)}`, tokens: 48 });

function call(base: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; text: string }> {
  const url = new URL(path, base);
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: { authorization: `Bearer ${token}`, ...(data ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

export async function conversations(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 4 : 12;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-chat-'));
  const redisServer = await spawnUntil('redis-server', ['--port', '0', '--save', '', '--appendonly', 'no', '--unixsocket', join(dir, 'r.sock')], /(ready to accept connections)/i).catch(() => {
    throw new Error('the conversation benchmark needs redis-server for its peer (apt-get install redis-server)');
  });
  const redisUrl = `redis+unix://${join(dir, 'r.sock')}`;
  const rows: ResultRow[] = [];
  try {
    const strata = await spawnUntil(
      process.execPath,
      [CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'strata')}`, '--set', 'tiers={bench: {daily_token_limit: 1000000000000, conversation_retention_days: 30}}'],
      /"url":"(http:\/\/[^"]+)"/,
    );
    const base = strata.match;
    const token = readFileSync(join(dir, 'strata', 'admin.token'), 'utf8').trim();
    const auth = { authorization: `Bearer ${token}` };
    await call(base, 'POST', '/v1/users', token, { id: 'bench', email: 'bench@example.com', tier: 'bench' });
    const convs: string[] = [];
    for (let i = 0; i < CONCURRENCY; i++) convs.push(JSON.parse((await call(base, 'POST', '/v1/conversations', token, { user_id: 'bench' })).text).id);
    // Each client appends to its own conversation, as chat sessions do.
    const append = await closedLoop(base, CONCURRENCY, seconds, (i) => ({
      method: 'POST',
      path: `/v1/conversations/${convs[i % CONCURRENCY]}/messages`,
      headers: auth,
      body: JSON.stringify(message(i)),
    }));
    const readPath = (i: number) => `/v1/conversations/${convs[i % CONCURRENCY]}/messages?last=50`;
    const sample = await call(base, 'GET', readPath(0), token);
    const read = await closedLoop(base, CONCURRENCY, seconds, (i) => ({ method: 'GET', path: readPath(i), headers: auth }));
    const usage = await closedLoop(base, CONCURRENCY, seconds, () => ({
      method: 'POST',
      path: '/v1/usage',
      headers: auth,
      body: JSON.stringify({ user_id: 'bench', model: 'm', input_tokens: 100, output_tokens: 50 }),
    }));
    const prefsDoc = { theme: 'dark', language: 'en', system_prompt: 'You are a helpful assistant. '.repeat(10), temperature: 0.7 };
    await call(base, 'PUT', '/v1/users/bench/preferences', token, prefsDoc);
    const prefs = await closedLoop(base, CONCURRENCY, seconds, () => ({ method: 'GET', path: '/v1/users/bench/preferences', headers: auth }));
    await stop(strata.proc);

    const sqlitePeer = await spawnUntil(process.execPath, [SQLITE_PEER, join(dir, 'peer.db')], /listening (http:\/\/\S+)/);
    const peerAppend = await closedLoop(sqlitePeer.match, CONCURRENCY, seconds, (i) => ({ method: 'POST', path: `/c/${i % CONCURRENCY}/messages`, body: JSON.stringify(message(i)) }));
    await stop(sqlitePeer.proc);

    const seed = new Redis(redisUrl);
    await seed.set('last50', sample.text);
    await seed.set('prefs', JSON.stringify(prefsDoc));
    seed.disconnect();
    const redisPeer = await spawnUntil(process.execPath, [REDIS_PEER, redisUrl], /listening (http:\/\/\S+)/);
    const peerRead = await closedLoop(redisPeer.match, CONCURRENCY, seconds, () => ({ method: 'GET', path: '/k/last50' }));
    const peerUsage = await closedLoop(redisPeer.match, CONCURRENCY, seconds, () => ({ method: 'POST', path: '/incr/usage', body: JSON.stringify({ input_tokens: 100, output_tokens: 50 }) }));
    const peerPrefs = await closedLoop(redisPeer.match, CONCURRENCY, seconds, () => ({ method: 'GET', path: '/k/prefs' }));
    await stop(redisPeer.proc);

    const all = { append, read, usage, prefs, peerAppend, peerRead, peerUsage, peerPrefs };
    for (const [k, v] of Object.entries(all)) if (v.errors) throw new Error(`conversation bench ${k} saw ${v.errors} errors`);
    const notes = `${CONCURRENCY} keep-alive clients, ${seconds}s each; memory cache driver`;
    const add = (name: string, s: LoadResult, p: LoadResult, peer: string, extra = '') => {
      const n = `${notes}${extra}`;
      rows.push(row({ name, metric: 'throughput', unit: 'req/s', value: r1(s.perSecond), peer, peer_value: r1(p.perSecond), better: 'higher', notes: n }));
      rows.push(row({ name, metric: 'p50 latency', unit: 'ms', value: r2(s.p50ms), peer, peer_value: r2(p.p50ms), better: 'lower', notes: n }));
      rows.push(row({ name, metric: 'p99 latency', unit: 'ms', value: r2(s.p99ms), peer, peer_value: r2(p.p99ms), better: 'lower', notes: n }));
    };
    add('message_append', append, peerAppend, 'node:http + better-sqlite3 insert per request', '; goal p99 < 5 ms');
    add('message_read', read, peerRead, 'node:http + ioredis GET of the same bytes', `; last 50 messages, ${sample.text.length} bytes; goal p99 < 2 ms`);
    add('usage_record', usage, peerUsage, 'node:http + ioredis INCRBY (auto-pipelined)');
    add('preferences_read', prefs, peerPrefs, 'node:http + ioredis GET of the same JSON');
    return rows;
  } finally {
    await stop(redisServer.proc);
    rmSync(dir, { recursive: true, force: true });
  }
}

const r1 = (n: number) => Math.round(n * 10) / 10;
const r2 = (n: number) => Math.round(n * 100) / 100;
