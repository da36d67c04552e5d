import { readFileSync } from 'node:fs';
import { createApp } from './app.js';
import { createQdrantApp } from './compat/qdrant/qdrant-app.js';
import { createS3App } from './compat/s3/s3-app.js';
import { ConfigError } from './config.js';
import { listen, type Listener } from './listener.js';
import type { StrataNode } from './strata-node.js';

export interface RunningServer {
  url: string;
  /** The S3 endpoint's URL when s3.listen is set. */
  s3Url?: string;
  /** The Qdrant-compatible API's URL when qdrant.listen is set. */
  qdrantUrl?: string;
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

  const listeners = [listener];
  let s3Url: string | undefined;
  const s3 = node.config.s3;
  if (s3.listen) {
    // Same TLS as the main listener: one certificate for the node.
    const [h, p] = splitListen(s3.listen);
    const s3Listener = await listen({ hostname: h, port: p, tls, fetch: createS3App(node, { domain: s3.domain, region: s3.region }).fetch });
    const a = s3Listener.address;
    s3Url = `${tls ? 'https' : 'http'}://${a.family === 'IPv6' ? `[${a.host}]` : a.host}:${a.port}`;
    listeners.push(s3Listener);
    node.log.info({ url: s3Url, server: s3Listener.kind }, 'S3 endpoint listening');
  }

  let qdrantUrl: string | undefined;
  if (node.config.qdrant.listen) {
    const [h, p] = splitListen(node.config.qdrant.listen);
    const q = await listen({ hostname: h, port: p, tls, fetch: createQdrantApp(node).fetch });
    const a = q.address;
    qdrantUrl = `${tls ? 'https' : 'http'}://${a.family === 'IPv6' ? `[${a.host}]` : a.host}:${a.port}`;
    listeners.push(q);
    node.log.info({ url: qdrantUrl, server: q.kind }, 'Qdrant API listening');
  }

  let stopping: Promise<void> | null = null;
  const stop = (reason: string) => (stopping ??= drainAndClose(node, listeners, reason));
  return { url, ...(s3Url ? { s3Url } : {}), ...(qdrantUrl ? { qdrantUrl } : {}), stop };
}

function splitListen(listen: string): [string, number] {
  const sep = listen.lastIndexOf(':');
  return [listen.slice(0, sep).replace(/^\[(.*)\]$/, '$1'), Number(listen.slice(sep + 1))];
}

async function drainAndClose(node: StrataNode, listeners: Listener[], reason: string): Promise<void> {
  const timeoutMs = node.config.server.shutdown_timeout_seconds * 1000;
  node.log.info({ reason, timeout_ms: timeoutMs }, 'shutting down: no new connections, finishing requests in flight');
  node.draining = true;
  const cut = await Promise.all(listeners.map((l) => l.drain(timeoutMs)));
  if (cut.some(Boolean)) node.log.warn('shutdown timeout reached; closed the remaining connections');
  await node.close();
  node.log.info('stopped');
}
