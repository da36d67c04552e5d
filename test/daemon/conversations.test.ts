import { pack, unpack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon } from '../helpers/daemon.js';
import { openTestNode } from '../helpers/node.js';

describe('conversations over HTTP', () => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  beforeAll(async () => {
    t = await openTestNode();
    await t.call('POST', '/v1/users', { id: 'ann', email: 'ann@example.com', tier: 'free' });
  });
  afterAll(() => t.close());

  const start = async (body: Record<string, unknown> = {}) => {
    const r = await t.call('POST', '/v1/conversations', { user_id: 'ann', ...body });
    expect(r.status).toBe(201);
    return r.body as { id: string };
  };

  it('creates a conversation with zero counts', async () => {
    const r = await t.call('POST', '/v1/conversations', { user_id: 'ann', title: 'Trip', model: 'llama' });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ user_id: 'ann', title: 'Trip', model: 'llama', message_count: 0, token_count: 0 });
    expect(Date.parse(r.body.created_at)).not.toBeNaN();
    expect((await t.call('POST', '/v1/conversations', { id: r.body.id, user_id: 'ann' })).status).toBe(409);
    expect((await t.call('POST', '/v1/conversations', { user_id: 'nobody' })).status).toBe(404);
  });

  it('a conversation of huge messages is read in pages of bounded size, and every message comes back', async () => {
    const { id } = await start();
    const big = (i: number) => `${i}:` + '\u0000'.repeat(1024 * 1024 - 8); // JSON escaping makes each ~6 MB
    for (let i = 0; i < 6; i++) expect((await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: big(i) })).status).toBe(201);
    expect((await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'small' })).status).toBe(201);
    // 0.7.0 built all seven into one string (and failed past V8's limit): here a page stops near 16 MiB.
    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await t.call('GET', `/v1/conversations/${id}/messages?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      expect(JSON.stringify(r.body).length).toBeLessThan(24 * 1024 * 1024);
      seen.push(...r.body.items.map((m: { seq: number }) => m.seq));
      cursor = r.body.next_cursor;
      pages++;
    } while (cursor);
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(pages).toBeGreaterThan(1);
    const last = await t.call('GET', `/v1/conversations/${id}/messages?last=2`);
    expect(last.body.items.map((m: { seq: number; content: string }) => [m.seq, m.content.slice(0, 2)])).toEqual([[6, '5:'], [7, 'sm']]);
  });

  it('200 concurrent appends get seq 1..200 with no gap, and exact counts', async () => {
    const { id } = await start();
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: `m${i}`, tokens: 3 })),
    );
    expect(results.every((r) => r.status === 201)).toBe(true);
    const seqs = results.map((r) => r.body.items[0].seq as number).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    const conv = (await t.call('GET', `/v1/conversations/${id}`)).body;
    expect(conv).toMatchObject({ message_count: 200, token_count: 600 });
    // Every message is stored once, under the seq it was acknowledged with.
    const all: Array<{ seq: number; content: string }> = [];
    let cursor: string | null = null;
    do {
      const page = await t.call('GET', `/v1/conversations/${id}/messages?limit=64${cursor ? `&cursor=${cursor}` : ''}`);
      all.push(...page.body.items);
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(all.map((m) => m.seq)).toEqual(seqs);
    const bySeq = new Map(results.map((r) => [r.body.items[0].seq, r.body.items[0].content]));
    expect(all.every((m) => bySeq.get(m.seq) === m.content)).toBe(true);
  });

  it('appends a batch, pages forward with after, and reads the last N', async () => {
    const { id } = await start();
    const batch = Array.from({ length: 120 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `c${i + 1}`, tokens: 1 }));
    const r = await t.call('POST', `/v1/conversations/${id}/messages`, { messages: batch });
    expect(r.status).toBe(201);
    expect(r.body.items.map((m: { seq: number }) => m.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    const first = await t.call('GET', `/v1/conversations/${id}/messages?limit=10`);
    expect(first.body.items.map((m: { seq: number }) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(first.body.next_cursor).not.toBeNull();
    const after = await t.call('GET', `/v1/conversations/${id}/messages?after=115`);
    expect(after.body.items.map((m: { content: string }) => m.content)).toEqual(['c116', 'c117', 'c118', 'c119', 'c120']);
    expect(after.body.next_cursor).toBeNull();
    const last = await t.call('GET', `/v1/conversations/${id}/messages?last=50`);
    expect(last.body.items).toHaveLength(50);
    expect(last.body.items[0].seq).toBe(71);
    expect(last.body.items[49]).toMatchObject({ seq: 120, role: 'assistant', content: 'c120', tokens: 1 });
    // Past the cached tail (100 messages): answered from SQLite, same shape.
    const old = await t.call('GET', `/v1/conversations/${id}/messages?after=2&limit=3`);
    expect(old.body.items.map((m: { seq: number }) => m.seq)).toEqual([3, 4, 5]);
  });

  it('serves hot reads from the cache, and the cache follows every write', async () => {
    const { id } = await start();
    await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'hello' });
    const hits = async () =>
      (await t.node.metrics.cacheRequests.get()).values.find((v) => v.labels.use === 'conversations' && v.labels.result === 'hit')?.value ?? 0;
    const before = await hits();
    const read1 = await t.call('GET', `/v1/conversations/${id}/messages?last=10`);
    expect(read1.body.items.map((m: { content: string }) => m.content)).toEqual(['hello']);
    expect(await hits()).toBeGreaterThan(before);
    await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'assistant', content: 'hi there', tokens: 2 });
    const read2 = await t.call('GET', `/v1/conversations/${id}/messages?last=10`);
    expect(read2.body.items.map((m: { content: string }) => m.content)).toEqual(['hello', 'hi there']);
    expect((await t.call('GET', `/v1/conversations/${id}`)).body).toMatchObject({ message_count: 2, token_count: 2 });
  });

  it('the tail an append leaves in the cache is what SQLite holds, through concurrent appends, the count and byte budgets', async () => {
    const { id } = await start();
    // Appends extend the cached tail rather than re-reading it: many land in one commit, a
    // few are big enough to push older messages out of the 1 MiB tail, and the tail passes its
    // 100-message limit. After each wave, the cached answer must equal the uncached one.
    const wave = (from: number, n: number) =>
      Promise.all(
        Array.from({ length: n }, (_, i) => {
          const k = from + i;
          const content = k % 37 === 0 ? `big ${k} ` + 'é'.repeat(400_000) : `m${k} "quoted" \\ \u2028 line\nbreak`;
          return t.call('POST', `/v1/conversations/${id}/messages`, { role: k % 2 ? 'assistant' : 'user', content, tokens: k % 5 });
        }),
      );
    const uncached = async () => {
      await t.node.cache.invalidateAll();
      return (await t.call('GET', `/v1/conversations/${id}/messages?last=100`)).body.items;
    };
    type Tail = { j: string[]; first: number; all: boolean };
    const tail = async () => {
      const held = await t.node.cache.getDecoded<Tail>('conversations', `conv:${id}`, () => undefined as never);
      return { messages: held!.j.map((j) => JSON.parse(j)), first: held!.first, all: held!.all, chars: held!.j.reduce((n, j) => n + j.length, 0) };
    };
    for (const [from, n] of [[0, 1], [1, 60], [61, 80], [141, 5]] as const) {
      const acked = await wave(from, n);
      expect(acked.every((r) => r.status === 201)).toBe(true);
      const extended = await tail();
      const cached = (await t.call('GET', `/v1/conversations/${id}/messages?last=100`)).body.items;
      // The read above was answered from the tail the appends left; this one from SQLite, which
      // also puts the tail SQLite gives back in the cache: the same messages, the same budget.
      expect(cached).toEqual(await uncached());
      const rebuilt = await tail();
      expect({ ...extended, chars: 0 }).toEqual({ ...rebuilt, chars: 0 });
      expect(extended.chars).toBeLessThanOrEqual(1024 * 1024);
      expect(rebuilt.messages.length).toBeLessThanOrEqual(100);
      expect((await t.call('GET', `/v1/conversations/${id}`)).body).toMatchObject({ message_count: from + n });
    }
  });

  it('an append that finds the conversation archived behind a stale cached tail restores it and continues the seq', async () => {
    const { id } = await start();
    await t.call('POST', `/v1/conversations/${id}/messages`, { messages: [{ role: 'user', content: 'one' }, { role: 'assistant', content: 'two' }] });
    await t.call('GET', `/v1/conversations/${id}/messages?last=10`);
    const key = `conv:${id}`;
    const stale = await t.node.cache.getDecoded('conversations', key, () => undefined);
    expect(stale).toBeDefined();
    expect((await t.node.runConversationArchive(Date.now() + 4 * 86_400_000)).archived).toBeGreaterThanOrEqual(1);
    // Put the pre-archive tail back, as a cache that missed the archive's invalidation would hold it.
    await t.node.cache.setDecoded(key, stale, () => Buffer.alloc(0), 100);
    const r = await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'three' });
    expect(r.status).toBe(201);
    expect(r.body.items[0].seq).toBe(3);
    expect((await t.call('GET', `/v1/conversations/${id}`)).body).toMatchObject({ archived: false, message_count: 3 });
    await t.node.cache.invalidateAll();
    expect((await t.call('GET', `/v1/conversations/${id}/messages?last=10`)).body.items.map((m: { content: string }) => m.content)).toEqual(['one', 'two', 'three']);
  });

  it('speaks MessagePack on the messages endpoints when asked', async () => {
    const { id } = await start();
    const res = await t.app.request(`/v1/conversations/${id}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/msgpack', accept: 'application/msgpack' },
      body: pack({ messages: [{ role: 'user', content: 'packed' }] }),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toBe('application/msgpack');
    expect(unpack(Buffer.from(await res.arrayBuffer()))).toMatchObject({ items: [{ seq: 1, content: 'packed' }] });
    const read = await t.app.request(`/v1/conversations/${id}/messages`, { headers: { authorization: `Bearer ${t.adminToken}`, accept: 'application/msgpack' } });
    expect(unpack(Buffer.from(await read.arrayBuffer()))).toMatchObject({ items: [{ seq: 1, content: 'packed' }], next_cursor: null });
    const bad = await t.app.request(`/v1/conversations/${id}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/msgpack' },
      body: new Uint8Array([0xc1]),
    });
    expect(bad.status).toBe(400);
  });

  it("lists a user's conversations newest first, with pagination", async () => {
    await t.call('POST', '/v1/users', { id: 'lister', email: 'lister@example.com', tier: 'free' });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await t.call('POST', '/v1/conversations', { user_id: 'lister', title: `t${i}` })).body.id);
      // Creation times have millisecond resolution; two in one millisecond are ordered by id.
      await new Promise((r) => setTimeout(r, 2));
    }
    const p1 = await t.call('GET', '/v1/conversations?user_id=lister&limit=3');
    const p2 = await t.call('GET', `/v1/conversations?user_id=lister&limit=3&cursor=${p1.body.next_cursor}`);
    expect([...p1.body.items, ...p2.body.items].map((c: { id: string }) => c.id)).toEqual([...ids].reverse());
    expect(p2.body.next_cursor).toBeNull();
    expect((await t.call('GET', '/v1/conversations')).status).toBe(400);
  });

  it('deletes a conversation', async () => {
    const { id } = await start();
    await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'bye' });
    expect((await t.call('DELETE', `/v1/conversations/${id}`)).status).toBe(204);
    expect((await t.call('GET', `/v1/conversations/${id}`)).status).toBe(404);
    expect((await t.call('GET', `/v1/conversations/${id}/messages`)).status).toBe(404);
    expect((await t.call('DELETE', `/v1/conversations/${id}`)).status).toBe(404);
  });

  it('refuses bad input with a 400 and writes nothing', async () => {
    const { id } = await start();
    const before = t.node.sql.writer.lastLsn;
    const cases: Array<[string, string, unknown]> = [
      ['POST', `/v1/conversations/${id}/messages`, { role: 'robot', content: 'x' }],
      ['POST', `/v1/conversations/${id}/messages`, { role: 'user' }],
      ['POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 5 }],
      ['POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'x', tokens: -1 }],
      ['POST', `/v1/conversations/${id}/messages`, { messages: [] }],
      ['POST', `/v1/conversations/${id}/messages`, { messages: [{ role: 'user', content: 'ok' }, { role: 'user' }] }],
      ['POST', `/v1/conversations/${id}/messages`, { messages: Array.from({ length: 1001 }, () => ({ role: 'user', content: 'x' })) }],
      ['POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'x'.repeat(1024 * 1024 + 1) }],
      ['POST', '/v1/conversations', { user_id: 'ann', title: 7 }],
      ['POST', '/v1/conversations', { user_id: '../x' }],
      ['GET', `/v1/conversations/${id}/messages?after=-1`, undefined],
      ['GET', `/v1/conversations/${id}/messages?last=0`, undefined],
      ['GET', `/v1/conversations/${id}/messages?cursor=nonsense`, undefined],
    ];
    for (const [method, path, body] of cases) {
      const r = await t.call(method, path, body);
      expect(r.status, `${method} ${path} ${JSON.stringify(body)?.slice(0, 80)}`).toBe(400);
      expect(r.body.error.code).toBe('invalid_input');
    }
    expect(t.node.sql.writer.lastLsn).toBe(before);
    expect((await t.call('GET', `/v1/conversations/${id}`)).body.message_count).toBe(0);
  });
});

describe('conversations survive kill -9', () => {
  it('loses no acknowledged message when the daemon is killed during a stream of appends', async () => {
    const d = await startDaemon();
    await api(d, 'POST', '/v1/users', { id: 'k', email: 'k@example.com', tier: 'pro' });
    const conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'k' })).body.id as string;
    const acked = new Map<number, string>();
    let n = 0;
    let stop = false;
    // 16 writers append as fast as they can; the daemon is killed while they do.
    const writer = async () => {
      while (!stop) {
        const content = `message ${n++}`;
        try {
          const r = await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content, tokens: 1 });
          if (r.status === 201) acked.set(r.body.items[0].seq, content);
        } catch {
          return; // connection refused or reset: the daemon is gone
        }
      }
    };
    const writers = Array.from({ length: 16 }, writer);
    await new Promise((r) => setTimeout(r, 1500));
    await d.kill9();
    stop = true;
    await Promise.all(writers);
    expect(acked.size).toBeGreaterThan(50);

    const again = await startDaemon({ dataDir: d.dataDir });
    const stored: Array<{ seq: number; content: string }> = [];
    let cursor: string | null = null;
    do {
      const page = await api(again, 'GET', `/v1/conversations/${conv}/messages?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      stored.push(...page.body.items);
      cursor = page.body.next_cursor;
    } while (cursor);
    const bySeq = new Map(stored.map((m) => [m.seq, m.content]));
    for (const [seq, content] of acked) expect(bySeq.get(seq), `seq ${seq}`).toBe(content);
    // Gapless, and the counts agree with the rows.
    expect(stored.map((m) => m.seq)).toEqual(Array.from({ length: stored.length }, (_, i) => i + 1));
    expect((await api(again, 'GET', `/v1/conversations/${conv}`)).body).toMatchObject({ message_count: stored.length, token_count: stored.length });
    await again.stop();
  });
});
