import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { S3Error } from './s3-error.js';
import { sha256Hex } from './sigv4.js';

// The aws-chunked body framing (Content-Encoding: aws-chunked), decoded as it streams:
//   <hex size>[;chunk-signature=<sig>]\r\n<data>\r\n … 0[;chunk-signature=<sig>]\r\n
//   [<trailer name>:<value>\r\n …][x-amz-trailer-signature:<sig>\r\n]\r\n
// Signed modes (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) chain each chunk's signature on
// the previous one, from the seed signature of the Authorization header. Data is passed on as
// it arrives, before its chunk's signature is checked: whoever stores it keeps it in a
// temporary file and commits only when this generator has finished without throwing, so a
// forged chunk stores nothing. Memory is bounded by the socket's reads, not by chunk sizes.
// Never store the framed body itself (seaweedfs#6548 was that bug).

export interface ChunkSigning {
  signingKey: Buffer;
  seedSignature: string;
  amzDate: string;
  scope: string;
}

export interface ChunkedOptions {
  /** Present in the signed modes. */
  signing?: ChunkSigning;
  /** X-Amz-Decoded-Content-Length, when sent: the decoded size must equal it. */
  decodedLength?: number;
  /** Receives the trailing headers (lower-case names), e.g. x-amz-checksum-crc32. */
  trailers?: (headers: Record<string, string>) => void;
}

const EMPTY_SHA256 = sha256Hex('');
/** A chunk header line longer than this is not aws-chunked framing. */
const MAX_LINE = 4096;

export async function* decodeAwsChunked(body: AsyncIterable<Uint8Array>, options: ChunkedOptions = {}): AsyncGenerator<Buffer> {
  const input = body[Symbol.asyncIterator]();
  let buf = Buffer.alloc(0);
  let done = false;
  const more = async (): Promise<boolean> => {
    if (done) return false;
    const next = await input.next();
    if (next.done) {
      done = true;
      return false;
    }
    buf = buf.length === 0 ? Buffer.from(next.value) : Buffer.concat([buf, next.value]);
    return true;
  };
  const line = async (): Promise<string> => {
    for (;;) {
      const end = buf.indexOf('\r\n');
      if (end !== -1) {
        const text = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 2);
        return text;
      }
      if (buf.length > MAX_LINE) throw new S3Error('IncompleteBody', 'an aws-chunked header line is too long');
      if (!(await more())) throw new S3Error('IncompleteBody', 'the body ended inside an aws-chunked header');
    }
  };
  const signing = options.signing;
  let previous = signing?.seedSignature ?? '';
  let decoded = 0;
  for (;;) {
    const header = await line();
    const semi = header.indexOf(';');
    const sizeText = semi === -1 ? header : header.slice(0, semi);
    if (!/^[0-9a-fA-F]{1,16}$/.test(sizeText)) throw new S3Error('IncompleteBody', `not an aws-chunked size: ${JSON.stringify(sizeText.slice(0, 32))}`);
    const size = parseInt(sizeText, 16);
    const given = semi === -1 ? undefined : /^chunk-signature=([0-9a-f]{64})$/.exec(header.slice(semi + 1))?.[1];
    if (signing && given === undefined) throw new S3Error('SignatureDoesNotMatch', 'a signed aws-chunked body has a chunk without chunk-signature');
    const hash = createHash('sha256');
    let left = size;
    while (left > 0) {
      if (buf.length === 0 && !(await more())) throw new S3Error('IncompleteBody', 'the body ended inside an aws-chunked chunk');
      const take = buf.subarray(0, Math.min(left, buf.length));
      buf = buf.subarray(take.length);
      left -= take.length;
      if (signing) hash.update(take);
      decoded += take.length;
      yield take;
    }
    if (signing) {
      const stringToSign = ['AWS4-HMAC-SHA256-PAYLOAD', signing.amzDate, signing.scope, previous, EMPTY_SHA256, hash.digest('hex')].join('\n');
      previous = check(signing.signingKey, stringToSign, given!);
    }
    if (size === 0) break;
    if ((await line()) !== '') throw new S3Error('IncompleteBody', 'an aws-chunked chunk is not followed by CRLF');
  }
  // Trailers, then the empty line that ends the body.
  const trailers: Record<string, string> = {};
  let trailerSignature: string | undefined;
  const lines: string[] = [];
  /** Every trailer line counts, signature lines too (review: 20,000 of those were taken). */
  let trailerLines = 0;
  for (;;) {
    const l = await line();
    if (l === '') break;
    const colon = l.indexOf(':');
    if (colon < 1) throw new S3Error('IncompleteBody', 'a malformed aws-chunked trailer');
    const name = l.slice(0, colon).trim().toLowerCase();
    const value = l.slice(colon + 1).trim();
    if (name === 'x-amz-trailer-signature') trailerSignature = value;
    else {
      trailers[name] = value;
      lines.push(`${name}:${value}\n`);
    }
    if (lines.length + (trailerSignature === undefined ? 0 : 1) > 17 || ++trailerLines > 17) throw new S3Error('IncompleteBody', 'too many aws-chunked trailers');
  }
  if (signing && lines.length > 0) {
    if (!trailerSignature) throw new S3Error('SignatureDoesNotMatch', 'signed trailers need x-amz-trailer-signature');
    const stringToSign = ['AWS4-HMAC-SHA256-TRAILER', signing.amzDate, signing.scope, previous, sha256Hex(lines.join(''))].join('\n');
    check(signing.signingKey, stringToSign, trailerSignature);
  }
  if (options.decodedLength !== undefined && decoded !== options.decodedLength) {
    throw new S3Error('IncompleteBody', `X-Amz-Decoded-Content-Length says ${options.decodedLength} bytes, the body decoded to ${decoded}`);
  }
  options.trailers?.(trailers);
}

function check(key: Buffer, stringToSign: string, given: string): string {
  const expected = createHmac('sha256', key).update(stringToSign).digest();
  const got = Buffer.from(given, 'hex');
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw new S3Error('SignatureDoesNotMatch', 'an aws-chunked chunk signature does not match');
  return given;
}
