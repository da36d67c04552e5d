import type { Context } from 'hono';

/**
 * The request target (path and query) as the client sent it: node:http's IncomingMessage.url,
 * or, where the server hands over a web Request, its URL cut after the origin without parsing
 * (parsing resolves "." and ".." segments; Deno keeps them, Bun resolves them itself).
 */
export function rawTarget(c: Context): string {
  const incoming = (c.env as { incoming?: { url?: string } } | undefined)?.incoming?.url;
  if (incoming !== undefined) return incoming;
  const url = c.req.raw.url;
  const slash = url.indexOf('/', url.indexOf('//') + 2);
  return slash === -1 ? '/' : url.slice(slash);
}
