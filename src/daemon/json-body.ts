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
  const bytes = await readLimited(c.req.raw.body, limitBytes);
  if (bytes.length === 0) throw new InvalidInput('a MessagePack body is required');
  let value: unknown;
  try {
    value = unpack(bytes) as unknown;
  } catch (err) {
    throw new InvalidInput(`the body is not valid MessagePack: ${(err as Error).message}`);
  }
  // msgpackr renames a "__proto__" key to "__proto_" rather than set a prototype: silently
  // changed data. Only bytes that spell the name can hold such a key.
  if (bytes.includes('__proto__')) refuseProtoKeys(value, ['__proto__', '__proto_']);
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
    text = utf8.decode(await readLimited(c.req.raw.body, limitBytes));
  } catch (err) {
    if (err instanceof TypeError) throw new InvalidInput('the body is not valid UTF-8');
    throw err;
  }
  if (text.trim() === '') throw new InvalidInput('a JSON body is required');
  if (nestingDepth(text) > jsonDepth) throw new InvalidInput(`the JSON body is nested deeper than ${jsonDepth} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidInput(`the body is not valid JSON: ${(err as Error).message}`);
  }
  // A key can only decode to "__proto__" if the text spells it or escapes some of it.
  if (text.includes('__proto__') || text.includes('\\u')) refuseProtoKeys(value, ['__proto__']);
  return value;
}

/**
 * JSON.parse keeps "__proto__" as an own key, but every later copy into a plain object
 * (zod's parse among them) assigns it, which sets the prototype or is ignored: the key was
 * silently dropped, and a filter on it matched everything. Such keys are refused instead,
 * naming where they are. The walk is iterative (depth is bounded anyway) and linear.
 */
function refuseProtoKeys(value: unknown, names: readonly string[]): void {
  const stack: Array<{ v: unknown; path: string }> = [{ v: value, path: 'body' }];
  while (stack.length > 0) {
    const { v, path } = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      v.forEach((item, i) => stack.push({ v: item, path: `${path}.${i}` }));
      continue;
    }
    for (const key of Object.keys(v)) {
      if (names.includes(key)) throw new InvalidInput(`the key "${key}" is not allowed (at ${path}): it names an object's prototype`, { issues: [{ path: `${path}.${key}`, message: 'reserved key' }] });
      stack.push({ v: (v as Record<string, unknown>)[key], path: `${path}.${key}` });
    }
  }
}

/** The deepest bracket nesting outside strings; a linear scan, no recursion. */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 92) i++; // backslash: skip the escaped character
      else if (ch === 34) inString = false;
    } else if (ch === 34) inString = true;
    else if (ch === 123 || ch === 91) max = Math.max(max, ++depth);
    else if (ch === 125 || ch === 93) depth--;
  }
  return max;
}

async function readLimited(body: ReadableStream<Uint8Array> | null, limitBytes: number): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limitBytes) {
      await reader.cancel().catch(() => undefined);
      throw new PayloadTooLarge(limitBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
