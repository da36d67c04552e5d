import { StringDecoder } from 'node:string_decoder';

// Lines of a byte stream, numbered from 1, without holding more than one line (plus one
// chunk) in memory. UTF-8 sequences split across chunks are joined by the decoder; a trailing
// "\r" is dropped, so CRLF files read like LF ones.

export const MAX_LINE_BYTES = 16 * 1024 * 1024;

export class LineTooLong extends Error {}

export async function* readLines(source: AsyncIterable<Uint8Array>): AsyncIterable<{ line: number; text: string; bytes: number }> {
  const decoder = new StringDecoder('utf8');
  let carry = '';
  let line = 0;
  const emit = (raw: string) => {
    line++;
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    return { line, text, bytes: Buffer.byteLength(raw) + 1 };
  };
  for await (const chunk of source) {
    // Search only the new text: a long line arriving in many chunks must not be rescanned
    // from its start each time (quadratic in the line's length).
    const searchFrom = carry.length;
    carry += decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    let at = 0;
    for (let nl = carry.indexOf('\n', searchFrom); nl !== -1; nl = carry.indexOf('\n', at)) {
      yield emit(carry.slice(at, nl));
      at = nl + 1;
    }
    carry = carry.slice(at);
    if (carry.length > MAX_LINE_BYTES) throw new LineTooLong(`line ${line + 1} is longer than ${MAX_LINE_BYTES} bytes`);
  }
  carry += decoder.end();
  if (carry.length > 0) yield emit(carry);
}
