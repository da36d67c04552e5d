import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { Crc32c, Crc64Nvme } from '@aws-sdk/checksums/crc';
import { S3Error } from './s3-error.js';

// What a PUT body is checked against as it streams: Content-MD5 and the flexible checksums
// (x-amz-checksum-crc32 | crc32c | crc64nvme | sha256 | sha1), sent as headers or as aws-chunked
// trailers. The MD5 is always computed: it is the object's ETag. A mismatch throws at the end
// of the body, inside the stream the object store is consuming, so nothing is stored (the
// store removes its temporary file). CRC32C and CRC64NVME come from @aws-sdk/checksums (Node
// has CRC32 only); MD5, SHA-1 and SHA-256 from node:crypto.

export const ALGORITHMS = ['crc32', 'crc32c', 'crc64nvme', 'sha256', 'sha1'] as const;
type Algorithm = (typeof ALGORITHMS)[number];

interface Digest {
  update(data: Uint8Array): void;
  digest(): Promise<Buffer>;
}

function digestFor(algorithm: Algorithm): Digest {
  switch (algorithm) {
    case 'crc32': {
      let value = 0;
      return { update: (d) => (value = crc32(d, value)), digest: async () => Buffer.from([value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255]) };
    }
    case 'crc32c':
    case 'crc64nvme': {
      const c = algorithm === 'crc32c' ? new Crc32c() : new Crc64Nvme();
      return { update: (d) => c.update(d), digest: async () => Buffer.from(await c.digest()) };
    }
    case 'sha256':
    case 'sha1': {
      const h = createHash(algorithm);
      return { update: (d) => h.update(d), digest: async () => h.digest() };
    }
  }
}

export interface CheckedBody {
  body: AsyncIterable<Uint8Array>;
  /** The body's MD5, hex, once it has been read whole. */
  md5(): string | undefined;
  /** The checksum headers to echo in the answer (x-amz-checksum-<alg>: base64). */
  echo(): Record<string, string>;
}

/**
 * Wraps `body`. `headers` are the request's (lower-case); `trailers()` gives the aws-chunked
 * trailers once the body has ended (empty when there are none).
 */
export function checkBody(
  body: AsyncIterable<Uint8Array>,
  headers: Record<string, string | undefined>,
  trailers: () => Record<string, string> = () => ({}),
): CheckedBody {
  const md5 = createHash('md5');
  let md5Hex: string | undefined;
  const declaredInTrailer = (headers['x-amz-trailer'] ?? '').toLowerCase().split(',').map((t) => t.trim()).filter(Boolean);
  const wanted = new Set<Algorithm>();
  for (const a of ALGORITHMS) if (headers[`x-amz-checksum-${a}`] !== undefined || declaredInTrailer.includes(`x-amz-checksum-${a}`)) wanted.add(a);
  for (const t of declaredInTrailer) if (!ALGORITHMS.some((a) => t === `x-amz-checksum-${a}`)) throw new S3Error('InvalidRequest', `unsupported trailer ${t}`);
  const contentMd5 = headers['content-md5'];
  if (contentMd5 !== undefined && !/^[A-Za-z0-9+/]{22}==$/.test(contentMd5)) throw new S3Error('InvalidDigest', 'The Content-MD5 you specified was invalid.');
  const digests = new Map([...wanted].map((a) => [a, digestFor(a)] as const));
  const results = new Map<Algorithm, string>();
  const checked = (async function* () {
    for await (const chunk of body) {
      md5.update(chunk);
      for (const d of digests.values()) d.update(chunk);
      yield chunk;
    }
    const got = md5.digest();
    if (contentMd5 !== undefined && got.toString('base64') !== contentMd5) throw new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.');
    const late = trailers();
    for (const [a, d] of digests) {
      const value = (await d.digest()).toString('base64');
      const given = headers[`x-amz-checksum-${a}`] ?? late[`x-amz-checksum-${a}`];
      if (given === undefined) throw new S3Error('InvalidRequest', `x-amz-checksum-${a} was announced in x-amz-trailer but not sent`);
      if (given !== value) throw new S3Error('BadDigest', `The ${a.toUpperCase()} you specified did not match the calculated checksum.`);
      results.set(a, value);
    }
    md5Hex = got.toString('hex');
  })();
  return {
    body: checked,
    md5: () => md5Hex,
    echo: () => Object.fromEntries([...results].map(([a, v]) => [`x-amz-checksum-${a}`, v])),
  };
}
