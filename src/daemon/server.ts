import { readFileSync } from 'node:fs';
import { createApp } from './app.js';
import { ConfigError } from './config.js';
import { listen, type Listener } from './listener.js';
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

  const listener = await listen({ hostname, port, tls, fetch: app.fetch });
  const { host: address, port: boundPort, family } = listener.address;
  const host = family === 'IPv6' ? `[${address}]` : address;
  const url = `${tls ? 'https' : 'http'}://${host}:${boundPort}`;
  node.replication.selfUrl = node.config.replication.advertise_url ?? url;
  node.httpServer = listener.kind;
  node.log.info({ url, server: listener.kind, node_id: node.config.node.id, data_dir: node.dataDir }, 'listening');

  let stopping: Promise<void> | null = null;
  const stop = (reason: string) => (stopping ??= drainAndClose(node, listener, reason));
  return { url, stop };
}

async function drainAndClose(node: StrataNode, listener: Listener, reason: string): Promise<void> {
  const timeoutMs = node.config.server.shutdown_timeout_seconds * 1000;
  node.log.info({ reason, timeout_ms: timeoutMs }, 'shutting down: no new connections, finishing requests in flight');
  node.draining = true;
  if (await listener.drain(timeoutMs)) node.log.warn('shutdown timeout reached; closed the remaining connections');
  await node.close();
  node.log.info('stopped');
}
