import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { decodeBody } from '../engines/body-decoder.js';
import { InvalidInput, PayloadTooLarge } from '../engines/errors.js';

// JSON bodies are read here, never with c.req.json(): that buffers whatever arrives, and
// hono's bodyLimit middleware reads a chunked body whole before it decides. Here a declared
// Content-Length over the limit is refused before a byte is read, and a chunked body is
// counted as it streams in and cut off at the limit.

const MSGPACK = /^application\/(x-)?msgpack\b/i;

/** Bulk routes also take MessagePack (Content-Type: application/msgpack), read under the same limit. */
export interface BodyLimits {
  bytes: number;
  /** JSON nested deeper than this is refused before parsing (a parser's recursion is not a budget). */
  jsonDepth: number;
}

export interface RawBody {
  bytes: Buffer;
  msgpack: boolean;
}

/** The body's bytes and format, read under the limit; the Content-Type must name JSON (or MessagePack where allowed). */
export async function readRawBody(c: Context, limits: BodyLimits, msgpack: boolean): Promise<RawBody> {
  const type = c.req.header('content-type');
  const isMsgpack = msgpack && type !== undefined && MSGPACK.test(type);
  if (!isMsgpack && type && !/^application\/(json|[a-z0-9.+-]*\+json)\b/i.test(type)) {
    throw new InvalidInput(`the body must be JSON (Content-Type: application/json), not ${type.split(';')[0]}`);
  }
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > limits.bytes) throw new PayloadTooLarge(limits.bytes);
  return { bytes: await readLimited(c, limits.bytes), msgpack: isMsgpack };
}

export async function readBody(c: Context, limits: BodyLimits, msgpack: boolean): Promise<unknown> {
  const raw = await readRawBody(c, limits, msgpack);
  return decodeBody(raw.bytes, raw.msgpack, limits.jsonDepth);
}

export async function readJsonBody(c: Context, limits: BodyLimits): Promise<unknown> {
  return readBody(c, limits, false);
}

/**
 * The body, read up to `limitBytes`. Under @hono/node-server straight from the socket's
 * IncomingMessage: asking hono for `c.req.raw.body` builds a full web Request and a
 * ReadableStream over the socket first, which cost a tenth of a small write request.
 * Elsewhere (Bun, Deno, tests through app.request) from the web stream.
 */
async function readLimited(c: Context, limitBytes: number): Promise<Buffer> {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  const chunks: Uint8Array[] = [];
  let total = 0;
  const take = (chunk: Uint8Array) => {
    total += chunk.byteLength;
    if (total > limitBytes) throw new PayloadTooLarge(limitBytes);
    chunks.push(chunk);
  };
  if (incoming && !incoming.readableDidRead) {
    for await (const chunk of incoming as AsyncIterable<Buffer>) take(chunk);
    return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  }
  const body = c.req.raw.body;
  if (!body) return Buffer.alloc(0);
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    try {
      take(value);
    } catch (err) {
      await reader.cancel().catch(() => undefined);
      throw err;
    }
  }
  return Buffer.concat(chunks);
}
