import { unpack } from 'msgpackr';
import { InvalidInput } from './errors.js';

// Turning a request body's bytes into a value, refusing what client JSON or MessagePack must
// not smuggle in. Pure and synchronous, with no HTTP in it, so the same code runs on the event
// loop for ordinary bodies and on a worker thread for bulk ones (a 1000 × 768 vector upsert
// is 8 MB of JSON: tens of milliseconds of parsing that no other request should wait for).

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A JSON (or, for bulk routes, MessagePack) body as a value; InvalidInput for anything refused. */
export function decodeBody(bytes: Uint8Array, msgpack: boolean, jsonDepth: number): unknown {
  return msgpack ? decodeMsgpack(bytes, jsonDepth) : decodeJson(bytes, jsonDepth);
}

function decodeMsgpack(bytes: Uint8Array, jsonDepth: number): unknown {
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
  checkValue(value, { keys: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes('__proto__') ? ['__proto__', '__proto_'] : [], maxDepth: jsonDepth });
  return value;
}

function decodeJson(bytes: Uint8Array, jsonDepth: number): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (err) {
    if (err instanceof TypeError) throw new InvalidInput('the body is not valid UTF-8');
    throw err;
  }
  if (text.trim() === '') throw new InvalidInput('a JSON body is required');
  const scan = quickScan(text, jsonDepth);
  if (scan.depth > jsonDepth) throw new InvalidInput(`the JSON body is nested deeper than ${jsonDepth} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidInput(`the body is not valid JSON: ${(err as Error).message}`);
  }
  // Walked only when the text can hold what the walk refuses: a key decodes to "__proto__"
  // only if the text spells it or escapes part of it, a lone surrogate only from a \u escape
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
export function checkValue(value: unknown, rules: { keys: readonly string[]; maxDepth?: number }): void {
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

const HUGE_EXPONENT = /[eE][+-]?[0-9]{3}/;
const LONG_RUN = 309;

/**
 * Whether the text holds a run of 309 or more digits (a literal too large for a double).
 * Any such run covers one of every 300th character, so only those are looked at, and a digit
 * there is grown into its run: a few microseconds for a 15 KB vector where a regex (restarting
 * in every run) or a character loop took 40-90.
 */
function hasLongDigitRun(text: string): boolean {
  const digit = (i: number) => {
    const c = text.charCodeAt(i);
    return c >= 48 && c <= 57;
  };
  for (let p = 0; p < text.length; p += LONG_RUN - 9) {
    if (!digit(p)) continue;
    let a = p;
    let b = p;
    while (a > 0 && digit(a - 1)) a--;
    while (b < text.length && digit(b)) b++;
    if (b - a >= LONG_RUN) return true;
  }
  return false;
}

/**
 * What scanJson answers, from native string searches where they suffice: a body with fewer
 * brackets than the depth limit cannot nest past it, a \u escape needs the two characters, a
 * huge literal needs 309 digits or a 3-digit exponent. Each may say yes where scanJson would
 * say no (inside a string): that only costs the walk. scanJson's character loop was the
 * largest cost of a 768-float vector query (140 µs of 300).
 */
function quickScan(text: string, jsonDepth: number): { depth: number; escapes: boolean; hugeNumber: boolean } {
  let brackets = 0;
  for (const ch of ['[', '{']) {
    for (let i = text.indexOf(ch); i !== -1 && brackets <= jsonDepth; i = text.indexOf(ch, i + 1)) brackets++;
  }
  if (brackets > jsonDepth) return scanJson(text);
  return { depth: brackets, escapes: text.includes('\\u'), hugeNumber: HUGE_EXPONENT.test(text) || hasLongDigitRun(text) };
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
