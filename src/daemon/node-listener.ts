import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { timedOut, type ListenOptions, type Listener } from './listener.js';

// node:http through @hono/node-server, which hands the app the IncomingMessage and
// ServerResponse beside the web Request (c.env.incoming / c.env.outgoing): bodies are read
// and files piped straight from and to the socket. node:http answers 431 past 16 KiB of
// headers and keeps the raw request target for the dot-segment check.

export async function listenNode(options: ListenOptions): Promise<Listener> {
  const { hostname, port, tls, fetch } = options;
  const server = (
    tls
      ? serve({ fetch, hostname, port, createServer: createHttpsServer, serverOptions: { ...tls, minVersion: 'TLSv1.2' } })
      : serve({ fetch, hostname, port })
  ) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const a = server.address() as AddressInfo;
  return {
    kind: 'node:http',
    address: { host: a.address, port: a.port, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4' },
    async drain(timeoutMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // A keep-alive connection that goes idle after its last response would hold close()
      // open forever; sweep them until the server has closed.
      const sweep = setInterval(() => server.closeIdleConnections?.(), 100);
      server.closeIdleConnections?.();
      const late = await timedOut(closed, timeoutMs);
      clearInterval(sweep);
      if (late) {
        server.closeAllConnections?.();
        await closed;
      }
      return late;
    },
  };
}
