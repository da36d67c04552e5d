import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from './app.js';
import { ConfigError } from './config.js';
import type { StrataNode } from './strata-node.js';

export interface RunningServer {
  url: string;
  /** Graceful: stop accepting, let in-flight requests finish (up to the timeout), close SQLite. */
  stop(reason: string): Promise<void>;
}

export async function startServer(node: StrataNode): Promise<RunningServer> {
  const { server: cfg } = node.config;
  const sep = cfg.listen.lastIndexOf(':');
  const hostname = cfg.listen.slice(0, sep).replace(/^\[(.*)\]$/, '$1');
  const port = Number(cfg.listen.slice(sep + 1));
  const app = createApp(node);

  let tls: { key: Buffer; cert: Buffer } | undefined;
  if (cfg.tls) {
    try {
      tls = { cert: readFileSync(cfg.tls.cert_file), key: readFileSync(cfg.tls.key_file) };
    } catch (err) {
      throw new ConfigError([`server.tls: cannot read ${(err as NodeJS.ErrnoException).path ?? 'a TLS file'} (${(err as NodeJS.ErrnoException).code})`]);
    }
  }

  const server = (
    tls
      ? serve({ fetch: app.fetch, hostname, port, createServer: createHttpsServer, serverOptions: { ...tls, minVersion: 'TLSv1.2' } })
      : serve({ fetch: app.fetch, hostname, port })
  ) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${tls ? 'https' : 'http'}://${host}:${address.port}`;
  node.replication.selfUrl = node.config.replication.advertise_url ?? url;
  node.log.info({ url, node_id: node.config.node.id, data_dir: node.dataDir }, 'listening');

  let stopping: Promise<void> | null = null;
  const stop = (reason: string) => (stopping ??= drainAndClose(node, server, reason));
  return { url, stop };
}

async function drainAndClose(node: StrataNode, server: Server, reason: string): Promise<void> {
  const timeoutMs = node.config.server.shutdown_timeout_seconds * 1000;
  node.log.info({ reason, timeout_ms: timeoutMs }, 'shutting down: no new connections, finishing requests in flight');
  node.draining = true;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // A keep-alive connection that goes idle after its last response would hold close()
  // open forever; sweep them until the server has closed.
  const sweep = setInterval(() => server.closeIdleConnections?.(), 100);
  server.closeIdleConnections?.();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    closed.then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
  ]);
  clearInterval(sweep);
  clearTimeout(timer);
  if (timedOut) {
    node.log.warn('shutdown timeout reached; closing the remaining connections');
    server.closeAllConnections?.();
    await closed;
  }
  await node.close();
  node.log.info('stopped');
}
