import { createHash, randomBytes } from 'node:crypto';
import { downloadFile, fileDownloadInfo, listFiles, modelInfo } from '@huggingface/hub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../../../helpers/daemon.js';

// The Hugging Face mirror driven by @huggingface/hub, unmodified, configured with hubUrl and
// an access token only; the headers huggingface_hub (Python) needs are checked on the wire.

let d: Daemon;
let hubUrl: string;
let accessToken: string;
const files: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"llama"}'),
  'tokenizer.json': Buffer.from('{"version":"1.0"}'),
  'weights/model-00001-of-00002.safetensors': randomBytes(2 * 1024 * 1024 + 3),
  'weights/model-00002-of-00002.safetensors': randomBytes(1024 * 1024),
};
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  d = await startDaemon();
  hubUrl = `${d.url}/hf`;
  // The JS client insists on the hf_ prefix: hf_<strata token> is accepted.
  accessToken = `hf_${d.adminToken}`;
  await api(d, 'PUT', '/v1/models/acme--llama-7b', {});
  for (const v of ['v1', 'v2']) {
    await api(d, 'POST', '/v1/models/acme--llama-7b/versions', { version: v });
    for (const [path, data] of Object.entries(files)) {
      const body = v === 'v2' && path === 'config.json' ? Buffer.from('{"model_type":"llama","v":2}') : data;
      const res = await fetch(`${d.url}/v1/models/acme--llama-7b/versions/${v}/files/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${d.adminToken}` }, body });
      expect(res.status).toBe(201);
    }
  }
  await api(d, 'POST', '/v1/models/acme--llama-7b/versions/v1/finalize');
  await api(d, 'PUT', '/v1/models/acme--llama-7b/aliases/stable', { version: 'v1' });
});
afterAll(() => d?.stop());

describe('Hugging Face mirror with @huggingface/hub', () => {
  it('model info at main (the newest final version), at an alias, at a version and at its commit id', async () => {
    const main = await modelInfo({ name: 'acme/llama-7b', hubUrl, accessToken, additionalFields: ['sha', 'filePaths'] as never });
    expect(main.name).toBe('acme/llama-7b');
    const raw = await (await fetch(`${hubUrl}/api/models/acme/llama-7b/revision/main`, { headers: { authorization: `Bearer ${d.adminToken}` } })).json();
    expect(raw.sha).toMatch(/^[0-9a-f]{40}$/);
    expect(raw.siblings.map((s: { rfilename: string }) => s.rfilename).sort()).toEqual(Object.keys(files).sort());
    const at = async (rev: string) => (await (await fetch(`${hubUrl}/api/models/acme/llama-7b/revision/${rev}`, { headers: { authorization: `Bearer ${d.adminToken}` } })).json()).sha;
    expect(await at('stable')).toBe(raw.sha);
    expect(await at('v1')).toBe(raw.sha);
    expect(await at(raw.sha)).toBe(raw.sha);
    expect(await at('v2')).not.toBe(raw.sha);
    await expect(modelInfo({ name: 'acme/nope', hubUrl, accessToken })).rejects.toThrow();
    const missing = await fetch(`${hubUrl}/api/models/acme/nope/revision/main`, { headers: { authorization: `Bearer ${d.adminToken}` } });
    expect([missing.status, missing.headers.get('x-error-code')]).toEqual([404, 'RepoNotFound']);
    const badRev = await fetch(`${hubUrl}/api/models/acme/llama-7b/revision/v9`, { headers: { authorization: `Bearer ${d.adminToken}` } });
    expect([badRev.status, badRev.headers.get('x-error-code')]).toEqual([404, 'RevisionNotFound']);
  });

  it('lists the tree recursively and one level, paged by Link', async () => {
    const all: Array<{ type: string; path: string; size: number; lfs?: { oid: string } }> = [];
    for await (const e of listFiles({ repo: 'acme/llama-7b', recursive: true, hubUrl, accessToken })) all.push(e as never);
    expect(all.filter((e) => e.type === 'file').map((e) => e.path).sort()).toEqual(Object.keys(files).sort());
    expect(all.find((e) => e.path === 'weights/model-00002-of-00002.safetensors')?.lfs?.oid).toBe(sha(files['weights/model-00002-of-00002.safetensors']!));
    const top: string[] = [];
    for await (const e of listFiles({ repo: 'acme/llama-7b', hubUrl, accessToken })) top.push(`${e.type}:${e.path}`);
    expect(top.sort()).toEqual(['directory:weights', 'file:config.json', 'file:tokenizer.json']);
    const first = await fetch(`${hubUrl}/api/models/acme/llama-7b/tree/main?recursive=true&limit=2`, { headers: { authorization: `Bearer ${d.adminToken}` } });
    expect((await first.json()).length).toBe(2);
    expect(first.headers.get('link')).toMatch(/cursor=2.*rel="next"/);
  });

  it('downloads every file of a revision byte-equal; resolve answers the headers huggingface_hub reads, ranges, and EntryNotFound', async () => {
    for (const [path, data] of Object.entries(files)) {
      const blob = await downloadFile({ repo: 'acme/llama-7b', path, revision: 'stable', hubUrl, accessToken });
      expect(Buffer.from(await blob!.arrayBuffer()).equals(data)).toBe(true);
    }
    const info = await fileDownloadInfo({ repo: 'acme/llama-7b', path: 'weights/model-00001-of-00002.safetensors', hubUrl, accessToken });
    expect(info?.size).toBe(files['weights/model-00001-of-00002.safetensors']!.length);
    expect(await fileDownloadInfo({ repo: 'acme/llama-7b', path: 'nope.bin', hubUrl, accessToken })).toBeNull();
    const url = `${hubUrl}/acme/llama-7b/resolve/main/weights/model-00001-of-00002.safetensors`;
    const head = await fetch(url, { method: 'HEAD', headers: { authorization: `Bearer ${d.adminToken}` } });
    expect(head.status).toBe(200);
    const commit = (await (await fetch(`${hubUrl}/api/models/acme/llama-7b/revision/main`, { headers: { authorization: `Bearer ${d.adminToken}` } })).json()).sha;
    expect(head.headers.get('x-repo-commit')).toBe(commit);
    expect(head.headers.get('x-linked-etag')).toBe(`"${sha(files['weights/model-00001-of-00002.safetensors']!)}"`);
    expect(head.headers.get('x-linked-size')).toBe(String(files['weights/model-00001-of-00002.safetensors']!.length));
    expect(head.headers.get('x-xet-hash')).toBeNull();
    const resumed = await fetch(url, { headers: { authorization: `Bearer ${d.adminToken}`, range: 'bytes=2097152-' } });
    expect(resumed.status).toBe(206);
    expect(Buffer.from(await resumed.arrayBuffer()).equals(files['weights/model-00001-of-00002.safetensors']!.subarray(2097152))).toBe(true);
    const gone = await fetch(`${hubUrl}/acme/llama-7b/resolve/main/none.bin`, { method: 'HEAD', headers: { authorization: `Bearer ${d.adminToken}` } });
    expect([gone.status, gone.headers.get('x-error-code')]).toEqual([404, 'EntryNotFound']);
  });

  it('needs a valid token', async () => {
    const res = await fetch(`${hubUrl}/api/models/acme/llama-7b`);
    expect(res.status).toBe(401);
    expect((await fetch(`${hubUrl}/api/models/acme/llama-7b`, { headers: { authorization: 'Bearer hf_strata_forged' } })).status).toBe(401);
  });
});
