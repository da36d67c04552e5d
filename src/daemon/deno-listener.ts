import { errorBody } from './http-error.js';
import { MAX_HEADER_BYTES, timedOut, type ListenOptions, type Listener } from './listener.js';

// Deno.serve. Deno keeps the raw request target in request.url, so the dot-segment check
// works as under node:http. Deno accepts up to 64 KiB of headers (and answers 400 past that,
// before any code of ours runs); below that, this listener answers 431 past 16 KiB, as the
// other two servers do.

interface DenoServer {
  readonly addr: { hostname: string; port: number };
  shutdown(): Promise<void>;
  readonly finished: Promise<void>;
}

interface DenoGlobal {
  serve(
    options: { hostname: string; port: number; cert?: string; key?: string; onListen?: (addr: { hostname: string; port: number }) => void },
    handler: (request: Request) => Response | Promise<Response>,
  ): DenoServer;
}

export async function listenDeno(options: ListenOptions): Promise<Listener> {
  const deno = (globalThis as unknown as { Deno: DenoGlobal }).Deno;
  let listening!: () => void;
  let draining = false;
  let inflight = 0;
  const ready = new Promise<void>((resolve) => (listening = resolve));
  const server = deno.serve(
    {
      hostname: options.hostname,
      port: options.port,
      ...(options.tls ? { cert: options.tls.cert.toString('utf8'), key: options.tls.key.toString('utf8') } : {}),
      onListen: () => listening(),
    },
    async (request) => {
      if (draining) {
        return Response.json(errorBody('unavailable', 'the node is shutting down'), { status: 503, headers: { connection: 'close' } });
      }
      // The request line counts too, as node:http and Bun count it (a 17 KiB URL was served).
      let bytes = request.method.length + request.url.length + 12;
      request.headers.forEach((value, name) => (bytes += name.length + value.length + 4));
      if (bytes > MAX_HEADER_BYTES) {
        return Response.json(errorBody('invalid_input', `the request headers are larger than ${MAX_HEADER_BYTES} bytes`), { status: 431 });
      }
      inflight++;
      try {
        return await options.fetch(request);
      } finally {
        inflight--;
      }
    },
  );
  await ready;
  const host = server.addr.hostname;
  return {
    kind: 'Deno.serve',
    address: { host, port: server.addr.port, family: host.includes(':') ? 'IPv6' : 'IPv4' },
    async drain(timeoutMs) {
      // shutdown() is meant to let requests in flight finish, but on Deno 2.9 it makes their
      // request bodies unreadable at once (denoland/deno#36809: a 500 for a request that was
      // still uploading). So requests in flight finish first — new ones meanwhile get 503 and
      // Connection: close — and shutdown() comes after. Past the timeout the process exits
      // under what is left.
      draining = true;
      const deadline = Date.now() + timeoutMs;
      const settled = new Promise<void>((resolve) => {
        const poll = setInterval(() => {
          if (inflight > 0) return;
          clearInterval(poll);
          resolve();
        }, 25);
      });
      if (await timedOut(settled, timeoutMs)) {
        // Stop listening at least; the connections still held end with the process (cli.ts).
        void server.shutdown().catch(() => undefined);
        return true;
      }
      return timedOut(server.shutdown(), Math.max(0, deadline - Date.now()));
    },
  };
}
