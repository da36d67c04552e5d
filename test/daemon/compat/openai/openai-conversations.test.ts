import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, type Daemon } from '../../../helpers/daemon.js';

// OpenAI's Conversations API driven by the `openai` SDK, unmodified, configured only with its
// documented baseURL and apiKey; and the same messages read through Strata's native API.

let d: Daemon;
let service: OpenAI;
let alice: OpenAI;
let bob: OpenAI;
let reader: OpenAI;

const client = (apiKey: string) => new OpenAI({ baseURL: `${d.url}/openai/v1`, apiKey, maxRetries: 0 });
const failure = async (p: Promise<unknown>) => {
  try {
    await p;
    return 'ok';
  } catch (err) {
    const e = err as { status?: number; error?: { type?: string; message?: string; param?: string | null } };
    return { status: e.status, type: e.error?.type, param: e.error?.param ?? null };
  }
};
const text = (item: unknown) => ((item as { content: Array<{ text: string }> }).content ?? []).map((p) => p.text).join('');

beforeAll(async () => {
  // With encryption on: items are messages, sealed like any other.
  const key = join(tempDir('strata-key-'), 'master.key');
  writeFileSync(key, randomBytes(32).toString('base64'));
  d = await startDaemon({ set: ['encryption.enabled=true', `encryption.master_key_file=${key}`] });
  const token = async (role: string, user_id?: string) => (await api(d, 'POST', '/v1/admin/tokens', { name: `oa-${role}-${user_id ?? ''}`, role, ...(user_id ? { user_id } : {}) })).body.token as string;
  for (const u of ['alice', 'bob']) await api(d, 'POST', '/v1/users', { id: u, email: `${u}@example.com`, tier: 'free' });
  service = client(await token('service'));
  alice = client(await token('user', 'alice'));
  bob = client(await token('user', 'bob'));
  reader = client(await token('reader'));
});
afterAll(() => d?.stop());

describe('OpenAI Conversations with the openai SDK', () => {
  it('creates, retrieves, updates and deletes a conversation; objects as OpenAI shapes them', async () => {
    const conv = await alice.conversations.create({ metadata: { topic: 'demo' }, items: [{ type: 'message', role: 'user', content: 'Hello!' }] });
    expect(conv.id).toMatch(/^conv_[0-9a-f]{32}$/);
    expect(conv.object).toBe('conversation');
    expect(Number.isInteger(conv.created_at)).toBe(true);
    expect(conv.metadata).toEqual({ topic: 'demo' });
    expect(await alice.conversations.retrieve(conv.id)).toEqual(conv);
    // The items came in the same write as the conversation.
    const uuid = conv.id.slice(5).replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
    expect((await api(d, 'GET', `/v1/conversations/${uuid}`)).body).toMatchObject({ user_id: 'alice', message_count: 1, metadata: { topic: 'demo' } });
    expect((await api(d, 'GET', `/v1/conversations/${uuid}/messages`)).body.items).toMatchObject([{ seq: 1, role: 'user', content: 'Hello!' }]);
    const updated = await alice.conversations.update(conv.id, { metadata: { topic: 'renamed', lang: 'en' } });
    expect(updated.metadata).toEqual({ topic: 'renamed', lang: 'en' });
    expect((await alice.conversations.retrieve(conv.id)).metadata).toEqual({ topic: 'renamed', lang: 'en' });
    const gone = await alice.conversations.delete(conv.id);
    expect(gone).toEqual({ id: conv.id, object: 'conversation.deleted', deleted: true });
    expect(await failure(alice.conversations.retrieve(conv.id))).toMatchObject({ status: 404, type: 'invalid_request_error' });
  });

  it('adds items (a list back), retrieves and deletes one (the conversation back); parts and roles kept', async () => {
    const conv = await alice.conversations.create({});
    const added = await alice.conversations.items.create(conv.id, {
      items: [
        { type: 'message', role: 'system', content: 'Be brief.' },
        { type: 'message', role: 'developer', content: [{ type: 'input_text', text: 'Rule one. ' }, { type: 'input_text', text: 'Rule two.' }] },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'What is 2+2?' }] },
        { role: 'assistant', content: 'Four.' },
      ],
    });
    expect(added.object).toBe('list');
    expect(added.data).toHaveLength(4);
    expect(added.first_id).toBe(added.data[0]!.id);
    expect(added.last_id).toBe(added.data[3]!.id);
    const dev = added.data[1]!;
    expect(dev).toMatchObject({ type: 'message', status: 'completed', role: 'developer', content: [{ type: 'input_text', text: 'Rule one. ' }, { type: 'input_text', text: 'Rule two.' }] });
    expect(added.data[3]).toMatchObject({ role: 'assistant', content: [{ type: 'output_text', text: 'Four.', annotations: [] }] });
    const one = await alice.conversations.items.retrieve(added.data[2]!.id, { conversation_id: conv.id });
    expect(text(one)).toBe('What is 2+2?');
    const after = await alice.conversations.items.delete(added.data[2]!.id, { conversation_id: conv.id });
    expect(after.id).toBe(conv.id);
    expect(await failure(alice.conversations.items.retrieve(added.data[2]!.id, { conversation_id: conv.id }))).toMatchObject({ status: 404 });
    const left = await alice.conversations.items.list(conv.id, { order: 'asc' });
    expect(left.data.map((i) => (i as { role: string }).role)).toEqual(['system', 'developer', 'assistant']);
    // The native API sees the same messages, the deleted one as an emptied placeholder.
    const id = conv.id.slice(5).replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
    const native = (await api(d, 'GET', `/v1/conversations/${id}/messages`)).body.items as Array<{ seq: number; role: string; content: string; item?: unknown }>;
    expect(native.map((m) => [m.seq, m.role, m.content])).toEqual([[1, 'system', 'Be brief.'], [2, 'developer', 'Rule one. Rule two.'], [3, 'user', ''], [4, 'assistant', 'Four.']]);
    expect(native[2]!.item).toEqual({ deleted: true });
  });

  it('pages through 250 items in both orders with after and limit, the SDK auto-paging', async () => {
    const conv = await service.conversations.create({ metadata: { user_id: 'alice' } });
    for (let i = 0; i < 250; i += 20) {
      await service.conversations.items.create(conv.id, { items: Array.from({ length: Math.min(20, 250 - i) }, (_, j) => ({ type: 'message' as const, role: (i + j) % 2 ? ('assistant' as const) : ('user' as const), content: `m${i + j}` })) });
    }
    const asc: string[] = [];
    for await (const item of alice.conversations.items.list(conv.id, { order: 'asc', limit: 100 })) asc.push(text(item));
    expect(asc).toEqual(Array.from({ length: 250 }, (_, i) => `m${i}`));
    const desc: string[] = [];
    for await (const item of alice.conversations.items.list(conv.id, { limit: 37 })) desc.push(text(item));
    expect(desc).toEqual(Array.from({ length: 250 }, (_, i) => `m${249 - i}`));
    const page = await alice.conversations.items.list(conv.id, { limit: 50 });
    expect(page.data).toHaveLength(50);
    expect(page.has_more).toBe(true);
    expect(text(page.data[0])).toBe('m249');
    // Deleted items are skipped and pages still fill.
    await alice.conversations.items.delete(page.data[1]!.id, { conversation_id: conv.id });
    await alice.conversations.items.delete(page.data[2]!.id, { conversation_id: conv.id });
    const again = await alice.conversations.items.list(conv.id, { limit: 50 });
    expect(again.data.map(text).slice(0, 3)).toEqual(['m249', 'm246', 'm245']);
    expect(again.data).toHaveLength(50);
    const tail = await alice.conversations.items.list(conv.id, { order: 'asc', after: again.data[3]!.id, limit: 5 });
    expect(tail.data.map(text)).toEqual(['m245', 'm246', 'm249']);
    expect(tail.has_more).toBe(false);
    // A cursor past the newest item pages from the newest down.
    const past = await alice.conversations.items.list(conv.id, { after: `msg_${conv.id.slice(5)}ffffffff`, limit: 2 });
    expect(past.data.map(text)).toEqual(['m249', 'm246']);
    // Natively: the same 250 seq numbers, gapless.
    const id = conv.id.slice(5).replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
    const native = (await api(d, 'GET', `/v1/conversations/${id}`)).body;
    expect(native).toMatchObject({ user_id: 'alice', message_count: 250, metadata: { user_id: 'alice' } });
  });

  it('holds tenants apart: another user sees not found, a reader cannot write, a service token must name the owner', async () => {
    const conv = await alice.conversations.create({ items: [{ role: 'user', content: 'secret' }] });
    expect(await failure(bob.conversations.retrieve(conv.id))).toMatchObject({ status: 404 });
    expect(await failure(bob.conversations.items.list(conv.id))).toMatchObject({ status: 404 });
    expect(await failure(bob.conversations.items.create(conv.id, { items: [{ role: 'user', content: 'x' }] }))).toMatchObject({ status: 404 });
    expect(await failure(bob.conversations.delete(conv.id))).toMatchObject({ status: 404 });
    expect(await failure(bob.conversations.create({ metadata: { user_id: 'alice' } }))).toMatchObject({ status: 400, param: 'metadata.user_id' });
    expect(await failure(reader.conversations.create({ metadata: { user_id: 'alice' } }))).toMatchObject({ status: 403, type: 'permission_error' });
    expect((await reader.conversations.items.list(conv.id)).data).toHaveLength(1);
    expect(await failure(service.conversations.create({}))).toMatchObject({ status: 400, param: 'metadata.user_id' });
    expect(await failure(service.conversations.create({ metadata: { user_id: 'nobody' } }))).toMatchObject({ status: 404 });
    expect(await failure(client('wrong').conversations.create({}))).toMatchObject({ status: 401, type: 'authentication_error' });
    // Another user's conversation answers word for word like a missing one (review: the
    // wording differed, and the other's messages were read before the check).
    const missing = `conv_${'0'.repeat(32)}`;
    const raw = async (method: string, path: string, token: string) => {
      const r = await fetch(`${d.url}/openai/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(method === 'POST' ? { body: JSON.stringify({ metadata: {} }) } : {}) });
      return { status: r.status, text: (await r.text()).replaceAll(conv.id, 'ID').replaceAll(missing, 'ID') };
    };
    const bobKey = bob.apiKey;
    for (const [method, path] of [['GET', ''], ['POST', ''], ['DELETE', ''], ['GET', '/items'], ['GET', `/items/msg_${conv.id.slice(5)}00000001`], ['DELETE', `/items/msg_${conv.id.slice(5)}00000001`]] as const) {
      const theirs = await raw(method, `/conversations/${conv.id}${path.replace(conv.id.slice(5), conv.id.slice(5))}`, bobKey);
      const none = await raw(method, `/conversations/${missing}${path.replace(conv.id.slice(5), '0'.repeat(32))}`, bobKey);
      expect(theirs, `${method} ${path}`).toEqual(none);
      expect(theirs.status).toBe(404);
    }
  });

  it("answers routes it does not have in OpenAI's error shape", async () => {
    for (const [method, path] of [['GET', '/conversations'], ['PATCH', `/conversations/conv_${'0'.repeat(32)}`], ['GET', '/responses']]) {
      const r = await fetch(`${d.url}/openai/v1${path}`, { method, headers: { authorization: `Bearer ${bob.apiKey}` } });
      expect(r.status).toBe(404);
      expect(((await r.json()) as { error: { type: string; message: string } }).error).toMatchObject({ type: 'invalid_request_error', message: expect.stringMatching(/Invalid URL/) });
    }
  });

  it('refuses bad input with OpenAI errors naming the parameter, storing nothing', async () => {
    const conv = await alice.conversations.create({});
    const bad: Array<[() => Promise<unknown>, string]> = [
      [() => alice.conversations.create({ items: Array.from({ length: 21 }, () => ({ role: 'user' as const, content: 'x' })) }), 'items'],
      [() => alice.conversations.create({ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }), 'metadata'],
      [() => alice.conversations.create({ metadata: { k: 'v'.repeat(513) } }), 'metadata.k'],
      [() => alice.conversations.items.create(conv.id, { items: [{ type: 'function_call_output', call_id: 'c', output: 'x' } as never] }), 'items[0].type'],
      [() => alice.conversations.items.create(conv.id, { items: [{ role: 'tool' as never, content: 'x' }] }), 'items[0].role'],
      [() => alice.conversations.items.create(conv.id, { items: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x' } as never] }] }), 'items[0].content[0].type'],
      [() => alice.conversations.items.list(conv.id, { limit: 101 }), 'limit'],
      [() => alice.conversations.items.list(conv.id, { order: 'sideways' as never }), 'order'],
      [() => alice.conversations.items.list(conv.id, { after: 'msg_nope' }), 'after'],
    ];
    for (const [call, param] of bad) expect(await failure(call()), param).toMatchObject({ status: 400, type: 'invalid_request_error', param });
    expect((await alice.conversations.items.list(conv.id)).data).toHaveLength(0);
    expect(await failure(alice.conversations.retrieve('conv_nope'))).toMatchObject({ status: 404 });
  });
});
