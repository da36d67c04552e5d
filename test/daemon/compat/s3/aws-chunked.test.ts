import { describe, expect, it } from 'vitest';
import { decodeAwsChunked } from '../../../../src/daemon/compat/s3/aws-chunked.js';
import { verify } from '../../../../src/daemon/compat/s3/sigv4.js';

// The worked example of AWS's "Transferring payload in multiple chunks" (sigv4-streaming): its
// request, its seed signature and its three chunk signatures are fixed by the documentation,
// so this checks our header verification and chunk chain against AWS's own figures.

const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const DOC_TIME = Date.UTC(2013, 4, 24);
const SIG = {
  seed: '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
  c1: 'ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648',
  c2: '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497',
  c3: 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9',
};
const docRequest = {
  method: 'PUT',
  target: '/examplebucket/chunkObject.txt',
  headers: {
    host: 's3.amazonaws.com',
    'x-amz-date': '20130524T000000Z',
    'x-amz-storage-class': 'REDUCED_REDUNDANCY',
    'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    'content-encoding': 'aws-chunked',
    'x-amz-decoded-content-length': '66560',
    'content-length': '66824',
    authorization: `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=${SIG.seed}`,
  },
};
const a = (n: number) => 'a'.repeat(n);
const docBody = `10000;chunk-signature=${SIG.c1}\r\n${a(65536)}\r\n400;chunk-signature=${SIG.c2}\r\n${a(1024)}\r\n0;chunk-signature=${SIG.c3}\r\n\r\n`;

/** The body as a stream of `size`-byte pieces (the framing must not depend on read boundaries). */
async function* pieces(text: string | Buffer, size: number) {
  const b = Buffer.from(text);
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of gen) out.push(c);
  return Buffer.concat(out);
}

describe('aws-chunked', () => {
  it("verifies AWS's documented streaming example: the seed signature and every chunk's, at any read size", async () => {
    const v = verify(docRequest, (id) => (id === 'AKIAIOSFODNN7EXAMPLE' ? SECRET : undefined), DOC_TIME);
    expect(v.payloadHash).toBe('STREAMING-AWS4-HMAC-SHA256-PAYLOAD');
    for (const size of [1, 7, 4096, 70_000]) {
      const data = await collect(decodeAwsChunked(pieces(docBody, size), { signing: v, decodedLength: 66560 }));
      expect(data.equals(Buffer.from(a(66560)))).toBe(true);
    }
  });

  it('refuses a changed byte, a reordered or missing chunk signature, a short body and a wrong decoded length', async () => {
    const v = verify(docRequest, () => SECRET, DOC_TIME);
    const run = (body: string, decodedLength = 66560) => collect(decodeAwsChunked(pieces(body, 4096), { signing: v, decodedLength }));
    await expect(run(docBody.replace(`\r\n${a(1024)}`, `\r\nb${a(1023)}`))).rejects.toMatchObject({ code: 'SignatureDoesNotMatch' });
    await expect(run(docBody.replace(SIG.c1, SIG.c2))).rejects.toMatchObject({ code: 'SignatureDoesNotMatch' });
    await expect(run(docBody.replace(`;chunk-signature=${SIG.c2}`, ''))).rejects.toMatchObject({ code: 'SignatureDoesNotMatch' });
    await expect(run(docBody.slice(0, 60_000))).rejects.toMatchObject({ code: 'IncompleteBody' });
    await expect(run(docBody, 66561)).rejects.toMatchObject({ code: 'IncompleteBody' });
    await expect(run('zz;chunk-signature=00\r\n')).rejects.toMatchObject({ code: 'IncompleteBody' });
  });

  it('decodes the unsigned form with trailing checksums (what botocore and the JS SDK stream) and hands over the trailers', async () => {
    let trailers: Record<string, string> = {};
    const body = `5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n`;
    const data = await collect(decodeAwsChunked(pieces(body, 3), { decodedLength: 11, trailers: (t) => (trailers = t) }));
    expect(data.toString()).toBe('hello world');
    expect(trailers).toEqual({ 'x-amz-checksum-crc32': 'DUoRhQ==' });
  });
});
