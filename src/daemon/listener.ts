import { isBun, isDeno } from '../engines/sql/database.js';

// The HTTP server under the app: each runtime's own. node:http (through @hono/node-server)
// under Node, Bun.serve under Bun, Deno.serve under Deno — their compatibility layers for
// node:http cost a second translation of every request. The app is the same fetch handler on
// all three; what differs is here, behind one small interface, and every implementation passes
// the same runtime tests (test/daemon/runtimes.test.ts).

export interface ListenOptions {
  hostname: string;
  port: number;
  tls?: { cert: Buffer; key: Buffer } | undefined;
  fetch: (request: Request, env?: unknown) => Response | Promise<Response>;
}

export interface Listener {
  readonly kind: 'node:http' | 'Bun.serve' | 'Deno.serve';
  /** Where it listens (the port the OS chose when asked for 0). */
  readonly address: { host: string; port: number; family: 'IPv4' | 'IPv6' };
  /**
   * Stops accepting connections and lets requests in flight finish; past `timeoutMs` closes
   * what is left. Resolves true when it had to cut requests short.
   */
  drain(timeoutMs: number): Promise<boolean>;
}

/**
 * Request headers past this many bytes get 431, as node:http answers past its 16 KiB
 * default; the Deno listener checks it itself (Deno accepts up to 64 KiB).
 */
export const MAX_HEADER_BYTES = 16 * 1024;

export async function listen(options: ListenOptions): Promise<Listener> {
  if (isBun()) return (await import('./bun-listener.js')).listenBun(options);
  if (isDeno()) return (await import('./deno-listener.js')).listenDeno(options);
  return (await import('./node-listener.js')).listenNode(options);
}

/** Resolves true once `timeoutMs` passes before `done` settles. */
export async function timedOut(done: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([done.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)))]);
  } finally {
    clearTimeout(timer);
  }
}
