import { StringDecoder } from 'node:string_decoder';

// Lines of a byte stream, numbered from 1, without holding more than one line (plus one
// chunk) in memory. UTF-8 sequences split across chunks are joined by the decoder; a trailing
// "\r" is dropped, so CRLF files read like LF ones. A line longer than `maxChars` is not held:
// it is read past and reported as `tooLong` (with its number and size, no text), so that one
// overlong line is one malformed line, not the end of the file. (Before 0.13 a long line that
// arrived inside one chunk was not caught.)

export const MAX_LINE_CHARS = 16 * 1024 * 1024;

export interface Line {
  line: number;
  text: string;
  bytes: number;
  tooLong?: true;
}

export async function* readLines(source: AsyncIterable<Uint8Array>, maxChars = MAX_LINE_CHARS): AsyncIterable<Line> {
  const decoder = new StringDecoder('utf8');
  let carry = '';
  let line = 0;
  /** Bytes of an overlong line read past so far; -1 while not skipping. */
  let skipped = -1;
  const emit = (raw: string): Line => {
    line++;
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    return { line, text, bytes: Buffer.byteLength(raw) + 1 };
  };
  for await (const chunk of source) {
    // Search only the new text: a long line arriving in many chunks must not be rescanned
    // from its start each time (quadratic in the line's length).
    const searchFrom = carry.length;
    carry += decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    // A UTF-8 byte-order mark (Windows tools write one) is not part of the first line.
    if (line === 0 && searchFrom === 0 && carry.charCodeAt(0) === 0xfeff) carry = carry.slice(1);
    let at = 0;
    for (let nl = carry.indexOf('\n', searchFrom); nl !== -1; nl = carry.indexOf('\n', at)) {
      if (skipped >= 0) {
        yield { line: ++line, text: '', bytes: skipped + Buffer.byteLength(carry.slice(at, nl)) + 1, tooLong: true };
        skipped = -1;
      } else if (nl - at > maxChars) yield { line: ++line, text: '', bytes: Buffer.byteLength(carry.slice(at, nl)) + 1, tooLong: true };
      else yield emit(carry.slice(at, nl));
      at = nl + 1;
    }
    carry = carry.slice(at);
    if (carry.length > maxChars) {
      skipped = (skipped < 0 ? 0 : skipped) + Buffer.byteLength(carry);
      carry = '';
    }
  }
  carry += decoder.end();
  if (skipped >= 0) yield { line: ++line, text: '', bytes: skipped + Buffer.byteLength(carry), tooLong: true };
  else if (carry.length > maxChars) yield { line: ++line, text: '', bytes: Buffer.byteLength(carry), tooLong: true };
  else if (carry.length > 0) yield emit(carry);
}
