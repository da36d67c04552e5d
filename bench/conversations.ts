import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { Redis } from 'ioredis';
import { row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags } from './lib.js';
import { alternate, hey, wrk, type FixedRate, type LoadRequest, type Saturation } from './load.js';

// The chat side over HTTP, each row beside a bare peer measured in the same run, both servers
// up at once and measured alternately (best of the rounds):
// - message_append: POST a message (auth, validation, gapless seq, counts, change log, audit,
//   group commit, cache refresh) vs node:http + one better-sqlite3 insert per request;
// - message_read: the last 50 messages (served from the hot cache) vs an ioredis GET of the
//   same bytes behind node:http;
// - usage_record: POST /v1/usage (quota check-and-consume + durable event) vs ioredis INCRBY;
// - preferences_read: GET preferences (read-through cache) vs an ioredis GET of the same JSON.
// Saturation is wrk at 64 connections; latency is hey at a fixed 2,000 req/s (latency at
// saturation is only queueing).

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const SQLITE_PEER = join(here, 'peers/message-sqlite-http-server.js');
const REDIS_PEER = join(here, 'peers/redis-http-server.js');
const CONNECTIONS = 64;
const RATE = 2000;

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

/** A server started under `runtime` (the daemon's CLI path and arguments follow). */
export async function startStrata(dir: string, runtime: string[] = [process.execPath]): Promise<{ proc: import('node:child_process').ChildProcess; url: string; token: string }> {
  const [cmd, ...pre] = runtime;
  const s = await spawnUntil(
    cmd!,
    [...pre, ...(cmd === process.execPath ? daemonFlags() : []), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${dir}`, '--set', 'backup.enabled=false', '--set', 'tiers={bench: {daily_token_limit: 1000000000000, conversation_retention_days: 30}}'],
    /"url":"(http:\/\/[^"]+)"/,
  );
  return { proc: s.proc, url: s.match, token: readFileSync(join(dir, 'admin.token'), 'utf8').trim() };
}

/** A user, 64 conversations each holding 50 messages, and preferences: what the chat rows read and write. */
export async function seedChat(base: string, token: string): Promise<{ convs: string[]; readSample: string }> {
  await call(base, 'POST', '/v1/users', token, { id: 'bench', email: 'bench@example.com', tier: 'bench' });
  const convs: string[] = [];
  for (let i = 0; i < CONNECTIONS; i++) {
    const id = JSON.parse((await call(base, 'POST', '/v1/conversations', token, { user_id: 'bench' })).text).id as string;
    await call(base, 'POST', `/v1/conversations/${id}/messages`, token, { messages: Array.from({ length: 50 }, (_, j) => message(j)) });
    convs.push(id);
  }
  await call(base, 'PUT', '/v1/users/bench/preferences', token, PREFS);
  return { convs, readSample: (await call(base, 'GET', `/v1/conversations/${convs[0]}/messages?last=50`, token)).text };
}

const PREFS = { theme: 'dark', language: 'en', system_prompt: 'You are a helpful assistant. '.repeat(10), temperature: 0.7 };

export function readRequest(convs: string[], token: string): LoadRequest {
  return { paths: convs.map((c) => `/v1/conversations/${c}/messages?last=50`), headers: { Authorization: `Bearer ${token}` } };
}

export async function conversations(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 2 : 5;
  const rounds = opts.quick ? 2 : 3;
  const fixedSeconds = opts.quick ? 3 : 8;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-chat-'));
  const redisServer = await spawnUntil('redis-server', ['--port', '0', '--save', '', '--appendonly', 'no', '--unixsocket', join(dir, 'r.sock')], /(ready to accept connections)/i);
  const redisUrl = `redis+unix://${join(dir, 'r.sock')}`;
  const rows: ResultRow[] = [];
  const procs: Array<import('node:child_process').ChildProcess> = [redisServer.proc];
  try {
    const strata = await startStrata(join(dir, 'strata'));
    procs.push(strata.proc);
    const auth = { Authorization: `Bearer ${strata.token}` };
    const { convs, readSample } = await seedChat(strata.url, strata.token);
    const sqlitePeer = await spawnUntil(process.execPath, [SQLITE_PEER, join(dir, 'peer.db')], /listening (http:\/\/\S+)/);
    procs.push(sqlitePeer.proc);
    const seed = new Redis(redisUrl);
    await seed.set('last50', readSample);
    await seed.set('prefs', JSON.stringify(PREFS));
    seed.disconnect();
    const redisPeer = await spawnUntil(process.execPath, [REDIS_PEER, redisUrl], /listening (http:\/\/\S+)/);
    procs.push(redisPeer.proc);

    const bodies = convs.map((_, i) => JSON.stringify(message(i)));
    const usageBody = JSON.stringify({ user_id: 'bench', model: 'm', input_tokens: 100, output_tokens: 50 });
    const saturated = async (s: LoadRequest & { base: string }, p: LoadRequest & { base: string }) =>
      alternate<Saturation>(rounds, () => wrk(s.base, s, CONNECTIONS, seconds), () => wrk(p.base, p, CONNECTIONS, seconds));
    const fixed = async (s: { url: string; method?: string; headers?: Record<string, string>; body?: string }, p: { url: string; method?: string; body?: string }) => {
      const r = await alternate<FixedRate & { perSecond: number }>(
        1,
        async () => ({ ...(await hey(s.url, s, RATE, fixedSeconds)), perSecond: 0 }),
        async () => ({ ...(await hey(p.url, p, RATE, fixedSeconds)), perSecond: 0 }),
      );
      return r;
    };

    const append = await saturated(
      { base: strata.url, method: 'POST', paths: convs.map((c) => `/v1/conversations/${c}/messages`), bodies, headers: auth },
      { base: sqlitePeer.match, method: 'POST', paths: convs.map((_, i) => `/c/${i}/messages`), bodies },
    );
    const appendFixed = await fixed({ url: `${strata.url}/v1/conversations/${convs[0]}/messages`, method: 'POST', headers: auth, body: bodies[0] }, { url: `${sqlitePeer.match}/c/0/messages`, method: 'POST', body: bodies[0] });
    const read = await saturated({ base: strata.url, ...readRequest(convs, strata.token) }, { base: redisPeer.match, paths: ['/k/last50'] });
    // openai_items_list: the newest 50 items through the OpenAI Conversations API vs the
    // native read of the last 50 messages, alternately on the same daemon.
    const openaiList = await saturated(
      { base: strata.url, paths: convs.map((c) => `/openai/v1/conversations/conv_${c.replaceAll('-', '')}/items?limit=50`), headers: auth },
      { base: strata.url, ...readRequest(convs, strata.token) },
    );
    const readFixed = await fixed({ url: `${strata.url}/v1/conversations/${convs[0]}/messages?last=50`, headers: auth }, { url: `${redisPeer.match}/k/last50` });
    const usage = await saturated({ base: strata.url, method: 'POST', paths: ['/v1/usage'], bodies: [usageBody], headers: auth }, { base: redisPeer.match, method: 'POST', paths: ['/incr/usage'], bodies: [usageBody] });
    const usageFixed = await fixed({ url: `${strata.url}/v1/usage`, method: 'POST', headers: auth, body: usageBody }, { url: `${redisPeer.match}/incr/usage`, method: 'POST', body: usageBody });
    const prefs = await saturated({ base: strata.url, paths: ['/v1/users/bench/preferences'], headers: auth }, { base: redisPeer.match, paths: ['/k/prefs'] });
    const prefsFixed = await fixed({ url: `${strata.url}/v1/users/bench/preferences`, headers: auth }, { url: `${redisPeer.match}/k/prefs` });

    const all = { append, read, usage, prefs, openaiList };
    for (const [k, v] of Object.entries(all)) if (v.strata.errors || v.peer.errors) throw new Error(`conversation bench ${k} saw errors: ${v.strata.errors} / ${v.peer.errors}`);
    for (const [k, v] of Object.entries({ appendFixed, readFixed, usageFixed, prefsFixed })) if (v.strata.errors || v.peer.errors) throw new Error(`conversation bench ${k} saw errors`);
    const notes = `wrk, ${CONNECTIONS} connections, best of ${rounds} alternating runs of ${seconds} s; memory cache driver`;
    const add = (name: string, r: { strata: Saturation; peer: Saturation }, peer: string, f?: { strata: FixedRate; peer: FixedRate }, goal = '') => {
      rows.push(row({ name, metric: 'throughput, 64 connections', unit: 'req/s', value: r1(r.strata.perSecond), peer, peer_value: r1(r.peer.perSecond), better: 'higher', notes }));
      if (!f) return;
      const fn = `hey at a fixed ${RATE} req/s for ${fixedSeconds} s (20 single-connection hey processes, staggered); achieved ${Math.round(f.strata.achieved)} / ${Math.round(f.peer.achieved)} req/s${goal}`;
      rows.push(row({ name, metric: `p50 latency at ${RATE} req/s`, unit: 'ms', value: r2(f.strata.p50ms), peer, peer_value: r2(f.peer.p50ms), better: 'lower', notes: fn }));
      rows.push(row({ name, metric: `p99 latency at ${RATE} req/s`, unit: 'ms', value: r2(f.strata.p99ms), peer, peer_value: r2(f.peer.p99ms), better: 'lower', notes: fn }));
    };
    add('message_append', append, 'node:http + better-sqlite3 insert per request', appendFixed, '; goal p99 < 5 ms');
    add('message_read', read, 'node:http + ioredis GET of the same bytes', readFixed, `; last 50 messages, ${readSample.length} bytes; goal p99 < 2 ms`);
    add('openai_items_list', openaiList, 'native message_read (last 50), same daemon', undefined);
    rows[rows.length - 1]!.notes += '; GET /openai/v1/conversations/{id}/items?limit=50 (newest first) vs GET /v1/conversations/{id}/messages?last=50; goal ≥ 0.9';
    add('usage_record', usage, 'node:http + ioredis INCRBY (auto-pipelined)', usageFixed);
    add('preferences_read', prefs, 'node:http + ioredis GET of the same JSON', prefsFixed);
    return rows;
  } finally {
    for (const p of procs.reverse()) await stop(p);
    rmSync(dir, { recursive: true, force: true });
  }
}

const r1 = (n: number) => Math.round(n * 10) / 10;
const r2 = (n: number) => Math.round(n * 100) / 100;
