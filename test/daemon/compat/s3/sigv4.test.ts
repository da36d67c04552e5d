import { createHash } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { Sha256 } from '../../../helpers/aws-hash.js';
import { verify, type SignedRequest } from '../../../../src/daemon/compat/s3/sigv4.js';

// Requests signed by the AWS SDK's own signer (@smithy/signature-v4, what @aws-sdk/client-s3
// uses), checked by ours: header auth, presigned URLs, and each way a request can be wrong.


const KEY = { accessKeyId: 'STRATAEXAMPLEKEY0001', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
const signer = new SignatureV4({ credentials: KEY, region: 'us-east-1', service: 's3', sha256: Sha256 as never, uriEscapePath: false, applyChecksum: false });
const secretOf = (id: string) => (id === KEY.accessKeyId ? KEY.secretAccessKey : undefined);

/** Signs as the SDK would; returns what our endpoint would see. */
async function signed(method: string, path: string, query: Record<string, string> = {}, headers: Record<string, string> = {}, opts: { presign?: number; date?: Date } = {}): Promise<SignedRequest> {
  const request = { method, protocol: 'http:', hostname: '127.0.0.1', port: 9000, path, query, headers: { host: '127.0.0.1:9000', ...headers } };
  const out = opts.presign
    ? await signer.presign(request, { expiresIn: opts.presign, signingDate: opts.date ?? new Date() })
    : await signer.sign({ ...request, headers: { ...request.headers, 'x-amz-content-sha256': headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD' } }, { signingDate: opts.date ?? new Date() });
  const qs = Object.entries(out.query ?? {})
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  const lower = Object.fromEntries(Object.entries(out.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return { method, target: out.path + (qs ? `?${qs}` : ''), headers: lower };
}

describe('SigV4 verification', () => {
  it('accepts header auth signed by the AWS SDK, with awkward keys and query strings', async () => {
    // Paths as the SDK sends them: each segment through encodeURIComponent plus !'()* escaped.
    for (const path of ['/models/llama/v1/config.json', '/models/a%20b/v1/%C3%A9t%C3%A9.bin', '/checkpoints/run-1/step%3D100/opt%281%29%21%27%2A.pt', '/models/']) {
      const req = await signed('GET', path, { 'list-type': '2', prefix: 'a b/ü', delimiter: '/', 'encoding-type': 'url' });
      expect(verify(req, secretOf).accessKeyId).toBe(KEY.accessKeyId);
    }
    const put = await signed('PUT', '/models/m/v1/w.bin', {}, { 'x-amz-content-sha256': createHash('sha256').update('hello').digest('hex'), 'content-type': 'application/octet-stream' });
    expect(verify(put, secretOf).payloadHash).toBe(createHash('sha256').update('hello').digest('hex'));
  });

  it('accepts a URL presigned by @aws-sdk/s3-request-presigner until it expires, then answers AccessDenied "Request has expired"', async () => {
    const { S3Client, GetObjectCommand } = await import('@aws-sdk/client-s3');
    const { getSignedUrl } = await import('@aws-sdk/s3-request-presigner');
    const client = new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', forcePathStyle: true, credentials: KEY });
    const at = Date.now();
    const url = new URL(await getSignedUrl(client, new GetObjectCommand({ Bucket: 'models', Key: 'm/v1/weights (1).bin' }), { expiresIn: 60 }));
    const req: SignedRequest = { method: 'GET', target: url.pathname + url.search, headers: { host: url.host } };
    expect(verify(req, secretOf, at + 1000).payloadHash).toBe('UNSIGNED-PAYLOAD');
    expect(() => verify(req, secretOf, at + 62_000)).toThrow(expect.objectContaining({ code: 'AccessDenied', message: 'Request has expired' }));
    expect(() => verify({ ...req, target: req.target.replace('X-Amz-Expires=60', 'X-Amz-Expires=6000') }, secretOf, at + 62_000)).toThrow(expect.objectContaining({ code: 'SignatureDoesNotMatch' }));
  });

  it('refuses a wrong secret, an unknown key, a changed request, a stale date and a malformed header with S3 codes', async () => {
    const req = await signed('GET', '/models/m/v1/w.bin');
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        return (err as { code: string; status: number }).code + ' ' + (err as { status: number }).status;
      }
      return 'accepted';
    };
    expect(code(() => verify(req, () => 'not-the-secret'))).toBe('SignatureDoesNotMatch 403');
    expect(code(() => verify(req, () => undefined))).toBe('InvalidAccessKeyId 403');
    expect(code(() => verify({ ...req, target: '/models/m/v1/other.bin' }, secretOf))).toBe('SignatureDoesNotMatch 403');
    expect(code(() => verify({ ...req, method: 'DELETE' }, secretOf))).toBe('SignatureDoesNotMatch 403');
    expect(code(() => verify({ ...req, headers: { ...req.headers, host: 'elsewhere:9000' } }, secretOf))).toBe('SignatureDoesNotMatch 403');
    expect(code(() => verify(req, secretOf, Date.now() + 16 * 60_000))).toBe('RequestTimeTooSkewed 403');
    expect(code(() => verify({ ...req, headers: { ...req.headers, authorization: 'AWS4-HMAC-SHA256 Credential=x' } }, secretOf))).toBe('AuthorizationHeaderMalformed 400');
    expect(code(() => verify({ ...req, headers: { ...req.headers, authorization: 'AWS AKIA:sig' } }, secretOf))).toBe('AuthorizationHeaderMalformed 400');
    expect(code(() => verify({ ...req, headers: { ...req.headers, authorization: undefined } }, secretOf))).toBe('AccessDenied 403');
    expect(code(() => verify({ ...req, target: '/models/%zz' }, secretOf))).toBe('InvalidArgument 400');
    expect(code(() => verify({ ...req, headers: { ...req.headers, 'x-amz-signature-extra': 'x', authorization: req.headers.authorization!.replace(/Signature=[0-9a-f]+/, 'Signature=zz') } }, secretOf))).toBe('SignatureDoesNotMatch 403');
    expect(code(() => verify(req, secretOf))).toBe('accepted');
  });
});
