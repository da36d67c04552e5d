import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { unpack } from 'msgpackr';
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

export async function readBody(c: Context, limits: BodyLimits, msgpack: boolean): Promise<unknown> {
  const limitBytes = limits.bytes;
  const type = c.req.header('content-type');
  if (!msgpack || !type || !MSGPACK.test(type)) return readJsonBody(c, limits);
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > limitBytes) throw new PayloadTooLarge(limitBytes);
  const bytes = await readLimited(c, limitBytes);
  if (bytes.length === 0) throw new InvalidInput('a MessagePack body is required');
  let value: unknown;
  try {
    value = unpack(bytes) as unknown;
  } catch (err) {
    throw new InvalidInput(`the body is not valid MessagePack: ${(err as Error).message}`);
  }
  // No text to pre-scan here, so every body is walked: depth (the JSON limit applies to
  // MessagePack too), strings, numbers. msgpackr renames a "__proto__" key to "__proto_"
  // rather than set a prototype: silently changed data, refused like the JSON spelling.
  checkValue(value, { keys: bytes.includes('__proto__') ? ['__proto__', '__proto_'] : [], maxDepth: limits.jsonDepth });
  return value;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export async function readJsonBody(c: Context, { bytes: limitBytes, jsonDepth }: BodyLimits): Promise<unknown> {
  const type = c.req.header('content-type');
  if (type && !/^application\/(json|[a-z0-9.+-]*\+json)\b/i.test(type)) {
    throw new InvalidInput(`the body must be JSON (Content-Type: application/json), not ${type.split(';')[0]}`);
  }
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > limitBytes) throw new PayloadTooLarge(limitBytes);
  let text: string;
  try {
    text = utf8.decode(await readLimited(c, limitBytes));
  } catch (err) {
    if (err instanceof TypeError) throw new InvalidInput('the body is not valid UTF-8');
    throw err;
  }
  if (text.trim() === '') throw new InvalidInput('a JSON body is required');
  const scan = scanJson(text);
  if (scan.depth > jsonDepth) throw new InvalidInput(`the JSON body is nested deeper than ${jsonDepth} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidInput(`the body is not valid JSON: ${(err as Error).message}`);
  }
  // Walked only when the text can hold what the walk refuses: a key decodes to "__proto__"
  // only if the text spells it or escapes part of it, a lone surrogate only from a \\u escape
  // (the UTF-8 decoder above is fatal), a non-finite number only from a huge literal.
  const proto = text.includes('__proto__');
  if (proto || scan.escapes || scan.hugeNumber) checkValue(value, { keys: proto || scan.escapes ? ['__proto__'] : [] });
  return value;
}

/**
 * What client JSON must not smuggle in, refused with 400 naming where it is instead of being
 * silently changed on the way to storage:
 * - a "__proto__" key: JSON.parse keeps it as an own key, but every later copy into a plain
 *   object (zod's parse among them) assigns it, which sets the prototype or is ignored — the
 *   key was dropped, and a vector filter on it matched everything (0.7.0);
 * - a lone surrogate (a "\ud800" escape): SQLite stores UTF-8, so it came back as U+FFFD;
 * - a number too large for a double ("1e400"): it became Infinity, then null in storage;
 * - nesting deeper than the limit (MessagePack, which has no text to pre-scan).
 * Iterative and linear in the value.
 */
function checkValue(value: unknown, rules: { keys: readonly string[]; maxDepth?: number }): void {
  const stack: Array<{ v: unknown; path: string; depth: number }> = [{ v: value, path: 'body', depth: 0 }];
  const string = (text: string, path: string) => {
    if (!wellFormed(text)) throw new InvalidInput(`the string at ${path} holds a lone UTF-16 surrogate, which is not valid Unicode`, { issues: [{ path, message: 'lone surrogate' }] });
  };
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop()!;
    if (typeof v === 'string') string(v, path);
    else if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new InvalidInput(`the number at ${path} is too large for a 64-bit float`, { issues: [{ path, message: 'not finite' }] });
    } else if (typeof v === 'object' && v !== null) {
      if (rules.maxDepth !== undefined && depth >= rules.maxDepth) throw new InvalidInput(`the body is nested deeper than ${rules.maxDepth} levels`);
      if (v instanceof Uint8Array) continue;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) stack.push({ v: v[i], path: `${path}.${i}`, depth: depth + 1 });
        continue;
      }
      for (const key of Object.keys(v)) {
        if (rules.keys.includes(key)) throw new InvalidInput(`the key "${key}" is not allowed (at ${path}): it names an object's prototype`, { issues: [{ path: `${path}.${key}`, message: 'reserved key' }] });
        string(key, `${path} (a key)`);
        stack.push({ v: (v as Record<string, unknown>)[key], path: `${path}.${key}`, depth: depth + 1 });
      }
    }
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** String.prototype.isWellFormed where the runtime has it (Node 20+, Bun, Deno); a linear regex otherwise. */
function wellFormed(text: string): boolean {
  const native = (text as string & { isWellFormed?: () => boolean }).isWellFormed;
  return native ? native.call(text) : !LONE_SURROGATE.test(text);
}

/**
 * One linear pass over the text: the deepest bracket nesting outside strings (a parser's
 * recursion is not a budget), whether a string holds a \u escape, and whether a number
 * literal is long enough to overflow a double (over 308 digits, or a 3-digit exponent).
 */
function scanJson(text: string): { depth: number; escapes: boolean; hugeNumber: boolean } {
  let depth = 0;
  let max = 0;
  let inString = false;
  let escapes = false;
  let hugeNumber = false;
  let digits = 0;
  let exponent = -1;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 92) {
        if (text.charCodeAt(i + 1) === 117) escapes = true; // \u
        i++; // skip the escaped character
      } else if (ch === 34) inString = false;
      continue;
    }
    if (ch >= 48 && ch <= 57) {
      if (exponent >= 0) {
        if (++exponent >= 3) hugeNumber = true;
      } else if (++digits > 308) hugeNumber = true;
      continue;
    }
    if ((ch === 101 || ch === 69) && digits > 0) {
      exponent = 0;
      continue;
    }
    if ((ch === 43 || ch === 45) && exponent === 0) continue;
    if (ch !== 46) {
      digits = 0;
      exponent = -1;
    }
    if (ch === 34) inString = true;
    else if (ch === 123 || ch === 91) max = Math.max(max, ++depth);
    else if (ch === 125 || ch === 93) depth--;
  }
  return { depth: max, escapes, hugeNumber };
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
