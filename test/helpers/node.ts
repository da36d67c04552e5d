import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createApp } from '../../src/daemon/app.js';
import { parseConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { StrataNode } from '../../src/daemon/strata-node.js';
import { tempDir } from './daemon.js';

// An in-process node on a temporary data dir, driven through hono's app.request (no socket).

export async function openTestNode(overrides: string[] = []) {
  const dataDir = tempDir();
  const config = parseConfig('{}', { overrides: [`storage.data_dir=${dataDir}`, ...overrides] });
  const node = await StrataNode.open(config, createLogger('silent'));
  const app = createApp(node);
  const adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const call = async (method: string, path: string, body?: unknown, token: string | null = adminToken) => {
    const res = await app.request(path, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as any) : null, headers: res.headers };
  };
  return { node, app, dataDir, adminToken, call, close: () => node.close() };
}
