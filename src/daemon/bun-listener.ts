import { timedOut, type ListenOptions, type Listener } from './listener.js';

// Bun.serve. Bun answers 431 past 16 KiB of headers itself. It resolves "." and ".." segments
// of the request target before the app sees it (the URL it hands over is already normalised),
// so the dot-segment check cannot see them: such a request is served as the path it resolves
// to, which the client could have asked for directly (docs/architecture.md, "Each runtime's own HTTP server").

interface BunServer {
  readonly port: number;
  readonly hostname: string;
  readonly pendingRequests: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
}

interface BunGlobal {
  serve(options: {
    hostname: string;
    port: number;
    tls?: { cert: string; key: string };
    fetch: (request: Request, server: BunServer) => Response | Promise<Response>;
    maxRequestBodySize?: number;
    idleTimeout?: number;
    development?: boolean;
  }): BunServer;
}

export async function listenBun(options: ListenOptions): Promise<Listener> {
  const bun = (globalThis as unknown as { Bun: BunGlobal }).Bun;
  let origin = '';
  const server = bun.serve({
    hostname: options.hostname,
    port: options.port,
    ...(options.tls ? { tls: { cert: options.tls.cert.toString('utf8'), key: options.tls.key.toString('utf8') } } : {}),
    // An HTTP/1.0 request without Host reaches the handler with a relative URL ("/healthz"),
    // which no URL parser takes (a 500 from the app, review): it is given this server's origin.
    fetch: (request) => (request.url.startsWith('/') ? options.fetch(new Request(`${origin}${request.url}`, request)) : options.fetch(request)),
    // Each route enforces its own limit while it reads (16 MiB JSON, model files of any size);
    // Bun's default (128 MiB) would refuse a large model upload before the app saw it.
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    // Replicas long-poll for up to a minute; Bun's default closes a connection idle for 10 s.
    idleTimeout: 120,
    development: false,
  });
  const host = options.hostname === 'localhost' ? '127.0.0.1' : options.hostname;
  origin = `${options.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${server.port}`;
  return {
    kind: 'Bun.serve',
    address: { host, port: server.port, family: host.includes(':') ? 'IPv6' : 'IPv4' },
    async drain(timeoutMs) {
      // stop(false) stops accepting but keeps idle keep-alive connections until their clients
      // close them; once no request is in flight, the rest are closed (as node:http's drain
      // sweeps idle connections).
      void server.stop(false);
      const idle = new Promise<void>((resolve) => {
        const poll = setInterval(() => {
          if (server.pendingRequests > 0) return;
          clearInterval(poll);
          resolve();
        }, 50);
      });
      const late = await timedOut(idle, timeoutMs);
      await server.stop(true);
      return late;
    },
  };
}
